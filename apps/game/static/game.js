// Realm's browser client: plain JavaScript, no build step, no inline script.
//
// Signs in through /auth, picks a character and a room through /game's HTTP
// routes, then plays over one WebSocket (/game/ws?ticket=...), the protocol of
// docs/game.md: a `full` view on join, delta patches (`p`) every 50 ms,
// inputs (`move`, `attack`, `say`, `ping`). Positions are drawn interpolated
// between patches; one's own moves are predicted and reconciled with the
// input number (`n`) the server echoes.
//
// What survives a reload lives in sessionStorage (this tab only): the session
// token, the character and the room. A reload or a dropped socket connects
// again and joins the same seat, which answers a fresh full state.
"use strict";

(() => {
  // --- constants ---------------------------------------------------------------
  const KEYS = { token: "realm.token", user: "realm.user", character: "realm.character", room: "realm.room" };
  const DIRS = {
    ArrowUp: [0, -1], KeyW: [0, -1], ArrowDown: [0, 1], KeyS: [0, 1],
    ArrowLeft: [-1, 0], KeyA: [-1, 0], ArrowRight: [1, 0], KeyD: [1, 0],
  };
  const TILE_COLORS = { floor: "#3f5b34", wall: "#4a4a52", water: "#2d5d8a" };
  const MONSTER_COLORS = { slime: "#7fd36b", wolf: "#9a8f86", bat: "#8c6bb1", skeleton: "#ddd8c4", dragon: "#d9432f" };
  const CLASS_COLORS = { warrior: "#d98f3a", archer: "#58b368", mage: "#5b8cf0" };
  //: Moves sent but not yet applied by the server: more would only fill its queue.
  const MAX_PENDING_MOVES = 2;
  //: Slack added to the class's step time between two moves, against jitter.
  const STEP_SLACK_MS = 15;
  //: How long an entity takes to glide to the tile a patch put it on.
  const GLIDE_MS = 120;
  const PING_EVERY_MS = 2000;
  const MAX_CHAT_LINES = 100;
  //: Items a character carries at most (the server's limit, actors/game/content.py).
  const INVENTORY_SIZE = 12;
  const ITEM_COLORS = { potion: "#e0508a", weapon: "#c0c8d8", armour: "#6fa8dc" };
  //: Item kinds (GET /game/items): name, slot, heal, attack, defence.
  let ITEMS = {};
  const RECONNECT_MAX_MS = 5000;
  //: Close codes after which reconnecting would not help (see docs/game.md).
  const CLOSE_SIGNED_OUT = 4401;
  const CLOSE_REPLACED = 4409;
  const CLOSE_FLOODING = 4008;

  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;

  // --- HTTP --------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    const token = store.getItem(KEYS.token);
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      if (response.status === 401 && path !== "/auth/login") signedOut("Your session ended: sign in again.");
      throw new ApiError(response.status, error.code || "http_" + response.status, error.message || response.statusText);
    }
    return data;
  }

  // --- what the page shows ------------------------------------------------------
  let noticeTimer = null;
  function notice(text, kind = "error") {
    const el = $("notice");
    el.textContent = text;
    el.className = kind === "info" ? "info" : "";
    el.hidden = !text;
    clearTimeout(noticeTimer);
    if (text) noticeTimer = setTimeout(() => (el.hidden = true), 6000);
  }

  function show(view) {
    for (const el of document.querySelectorAll(".view")) el.hidden = el.id !== view;
    const signedIn = Boolean(store.getItem(KEYS.token));
    $("signout").hidden = !signedIn;
    $("who").textContent = signedIn ? store.getItem(KEYS.user) || "" : "";
    document.body.dataset.view = view;
  }

  function element(tag, text, attrs = {}) {
    const el = document.createElement(tag);
    if (text !== undefined && text !== null) el.textContent = text;
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  }

  function button(text, onClick, attrs = {}) {
    const b = element("button", text, { type: "button", ...attrs });
    b.addEventListener("click", onClick);
    return b;
  }

  function guard(fn) {
    return async (event) => {
      if (event && event.preventDefault) event.preventDefault();
      try {
        await fn(event);
      } catch (error) {
        notice(error.message || String(error));
      }
    };
  }

  // --- 1. signing in -------------------------------------------------------------
  async function login(username, password) {
    const answer = await api("POST", "/auth/login", { username, password });
    store.setItem(KEYS.token, answer.token);
    store.setItem(KEYS.user, answer.user ? answer.user.username : username);
  }

  $("signin-form").addEventListener("submit", guard(async () => {
    await login($("username").value, $("password").value);
    $("password").value = "";
    await showCharacters();
  }));

  $("register").addEventListener("click", guard(async () => {
    const username = $("username").value;
    const password = $("password").value;
    if (!$("signin-form").reportValidity()) return;
    await api("POST", "/auth/register", { username, password });
    await login(username, password);
    $("password").value = "";
    await showCharacters();
  }));

  function signedOut(message) {
    game.stop();
    for (const key of Object.values(KEYS)) store.removeItem(key);
    show("signin-view");
    if (message) notice(message);
  }

  $("signout").addEventListener("click", guard(async () => {
    try {
      await api("POST", "/auth/logout");
    } finally {
      signedOut("");
    }
  }));

  // --- 2. characters ---------------------------------------------------------------
  let classesLoaded = false;

  async function showCharacters() {
    show("characters-view");
    if (!classesLoaded) {
      const classes = await api("GET", "/game/classes");
      const select = $("character-class");
      select.replaceChildren();
      for (const name of Object.keys(classes.classes || classes)) select.append(element("option", name, { value: name }));
      classesLoaded = true;
    }
    const { characters } = await api("GET", "/game/characters");
    const list = $("characters");
    list.replaceChildren();
    for (const c of characters) {
      const li = element("li", null, { "data-character": c.id });
      li.append(element("b", c.name), element("span", `${c.class}, level ${c.level}`, { class: "muted" }));
      li.append(button("Play", () => pickCharacter(c)));
      list.append(li);
    }
    if (!characters.length) list.append(element("li", "No character yet: create one.", { class: "muted" }));
  }

  $("character-form").addEventListener("submit", guard(async () => {
    const character = await api("POST", "/game/characters", {
      name: $("character-name").value,
      class: $("character-class").value,
    });
    $("character-name").value = "";
    await pickCharacter(character);
  }));

  async function pickCharacter(character) {
    store.setItem(KEYS.character, JSON.stringify({ id: character.id, name: character.name, class: character.class }));
    await showRooms();
  }

  function currentCharacter() {
    try {
      return JSON.parse(store.getItem(KEYS.character) || "null");
    } catch {
      return null;
    }
  }

  // --- 3. rooms --------------------------------------------------------------------
  let zonesLoaded = false;

  async function showRooms() {
    const character = currentCharacter();
    if (!character) return showCharacters();
    show("rooms-view");
    $("character-label").textContent = `as ${character.name} (${character.class})`;
    if (!zonesLoaded) {
      const { zones } = await api("GET", "/game/maps");
      const select = $("room-zone");
      select.replaceChildren();
      for (const z of zones) select.append(element("option", `${z.name} (${z.zone})`, { value: z.zone }));
      zonesLoaded = true;
    }
    await refreshRooms();
  }

  async function refreshRooms() {
    const { rooms } = await api("GET", "/game/rooms");
    const list = $("rooms");
    list.replaceChildren();
    for (const room of rooms) {
      const li = element("li", null, { "data-room": room.id, "data-label": room.label || "" });
      li.append(
        element("b", room.label || room.id),
        element("span", `${room.zone} · ${room.mode || "zone"} · ${room.players}/${room.max_players}`, { class: "muted" }),
        button("Join", guard(() => joinRoom(room.id))),
      );
      list.append(li);
    }
    if (!rooms.length) list.append(element("li", "No open room: create one.", { class: "muted" }));
  }

  $("refresh-rooms").addEventListener("click", guard(refreshRooms));
  $("change-character").addEventListener("click", guard(showCharacters));

  $("room-form").addEventListener("submit", guard(async () => {
    const body = { zone: $("room-zone").value, private: $("room-private").checked };
    const label = $("room-label").value.trim();
    if (label) body.label = label;
    const room = await api("POST", "/game/rooms", body);
    if (room.code) notice(`Private room: its join code is ${room.id}:${room.code}`, "info");
    await joinRoom(room.id);
  }));

  $("code-form").addEventListener("submit", guard(async () => {
    const code = $("room-code").value.trim();
    const room = $("room-code").dataset.room || "";
    // A code names its room: "<room id>:<code>" or the bare code of the room picked.
    const [id, secret] = code.includes(":") ? code.split(":", 2) : [room, code];
    if (!id) throw new Error("Give the code as <room>:<code>");
    await joinRoom(id, secret);
  }));

  async function joinRoom(roomId, code) {
    const character = currentCharacter();
    const body = { character: character.id };
    if (code) body.code = code;
    const seat = await api("POST", `/game/rooms/${encodeURIComponent(roomId)}/join`, body);
    store.setItem(KEYS.room, seat.room);
    game.start(seat.room);
  }

  async function quickPlay(zone) {
    const character = currentCharacter();
    const seat = await api("POST", "/game/play", { character: character.id, zone });
    store.setItem(KEYS.room, seat.room);
    game.start(seat.room);
  }

  // --- 4. the game -----------------------------------------------------------------
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");

  const game = {
    room: null, //: the room id this tab plays in
    ws: null,
    wanted: false, //: whether the socket should be open (false after leave/sign-out)
    attempts: 0,
    reconnectTimer: null,
    pingTimer: null,
    zone: null, //: the zone's map (parsed)
    zoneName: null,
    tiles: null, //: an offscreen canvas with the map drawn once
    tile: 20, //: pixels per tile
    me: null, //: own entity id
    you: {},
    ents: new Map(), //: id -> entity (the server's fields + drawing state)
    tick: 0,
    hz: 20,
    radius: 0, //: tiles seen around one's player (Chebyshev)
    inputN: 0, //: the last input number sent
    applied: 0, //: the last input number the server applied
    pending: [], //: moves sent, not yet applied: {n, x, y}
    lastMoveAt: 0,
    lastAttackAt: 0,
    held: new Set(), //: direction keys held down
    pingMs: null,
    chatSeen: new Set(), //: chat lines shown (a resync replays recent ones)

    start(roomId) {
      this.stop();
      this.room = roomId;
      this.wanted = true;
      this.attempts = 0;
      show("game-view");
      $("hud-room").textContent = roomId;
      $("chat").replaceChildren();
      this.chatSeen = new Set();
      this.inventoryShown = null;
      canvas.focus();
      refreshGold();
      loadItems();
      this.connect();
    },

    stop() {
      this.wanted = false;
      clearTimeout(this.reconnectTimer);
      clearInterval(this.pingTimer);
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close(1000, "bye");
      }
      this.held.clear();
      status("offline", "");
    },

    async connect() {
      if (!this.wanted) return;
      status("connecting…", "");
      let ticket;
      try {
        ({ ticket } = await api("POST", "/auth/ticket"));
      } catch (error) {
        if (error.status === 401) return;
        return this.retry();
      }
      if (!this.wanted) return;
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const ws = new WebSocket(`${scheme}://${location.host}/game/ws?ticket=${encodeURIComponent(ticket)}`);
      this.ws = ws;
      ws.addEventListener("open", () => {
        ws.send(JSON.stringify({ t: "join", room: this.room }));
      });
      ws.addEventListener("message", (event) => {
        if (ws !== this.ws) return;
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        this.onFrame(frame);
      });
      ws.addEventListener("close", (event) => {
        if (ws !== this.ws) return;
        this.ws = null;
        clearInterval(this.pingTimer);
        this.onClose(event);
      });
    },

    retry() {
      if (!this.wanted) return;
      status("reconnecting…", "down");
      const delay = Math.min(RECONNECT_MAX_MS, 250 * 2 ** this.attempts) * (0.5 + Math.random() / 2);
      this.attempts += 1;
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
    },

    onClose(event) {
      if (!this.wanted) return;
      if (event.code === CLOSE_SIGNED_OUT) return signedOut("Your session ended: sign in again.");
      if (event.code === CLOSE_REPLACED) {
        this.wanted = false;
        status("taken over", "down");
        return notice("This seat is now played from another tab or window.");
      }
      if (event.code === CLOSE_FLOODING) notice("Disconnected for sending too much; reconnecting.");
      this.retry();
    },

    send(frame) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify(frame));
        return true;
      }
      return false;
    },

    onFrame(f) {
      switch (f.t) {
        case "full":
          return this.onFull(f);
        case "p":
          return this.onPatch(f);
        case "pong":
          this.pingMs = Math.max(0, Math.round(performance.now() - f.c));
          $("ping").textContent = String(this.pingMs);
          if (typeof f.k === "number") this.setTick(f.k);
          return;
        case "chat":
          return this.onChat(f);
        case "gold":
          return showGold(f.balance);
        case "portal":
          return quickPlay(f.zone).catch((e) => notice(e.message));
        case "left":
          return this.onLeft(f.reason);
        case "error":
          return this.onError(f);
        default:
          return;
      }
    },

    // Applied at once (frames after it build on it); the map, if new, loads meanwhile.
    onFull(f) {
      this.attempts = 0;
      this.reseated = false;
      status(f.resync ? "live (resynced)" : "live", "live");
      if (f.room && f.room.zone && f.room.zone !== this.zoneName) {
        this.zoneName = f.room.zone;
        this.zone = null;
        this.tiles = null;
        this.loadZone(f.room.zone).catch((e) => notice(e.message));
      }
      if (f.room) $("hud-room").textContent = f.room.label || f.room.id;
      this.me = f.me;
      canvas.dataset.me = f.me;
      canvas.dataset.resyncs = String(Number(canvas.dataset.resyncs || 0) + (f.resync ? 1 : 0));
      canvas.dataset.fulls = String(Number(canvas.dataset.fulls || 0) + 1);
      this.hz = f.hz || this.hz;
      this.radius = f.radius || this.radius;
      this.you = f.you || {};
      this.ents.clear();
      const now = performance.now();
      for (const e of f.ents || []) this.ents.set(e.i, place({ ...e }, now, true));
      this.applied = f.n || 0;
      this.inputN = Math.max(this.inputN, this.applied);
      this.pending = [];
      this.setTick(f.k);
      this.showYou();
      this.showPlayers();
      clearInterval(this.pingTimer);
      this.ping();
      this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
    },

    onPatch(f) {
      const now = performance.now();
      for (const e of f.a || []) this.ents.set(e.i, place({ ...e }, now, true));
      for (const u of f.u || []) {
        const e = this.ents.get(u.i);
        if (!e) continue;
        const moved = ("x" in u && u.x !== e.x) || ("y" in u && u.y !== e.y);
        Object.assign(e, u);
        if (moved) place(e, now, false);
      }
      for (const id of f.r || []) this.ents.delete(id);
      for (const ev of f.e || []) this.onEvent(ev, now);
      if (f.you) Object.assign(this.you, f.you);
      if (typeof f.n === "number") this.reconcile(f.n);
      this.setTick(f.k);
      this.showYou();
      this.showPlayers();
    },

    onEvent(ev, now) {
      if (ev.e === "hit") {
        const target = this.ents.get(ev.d);
        if (target) target.flash = now;
      } else if (ev.e === "lvl" && ev.i === this.me) {
        notice(`Level ${ev.l}!`, "info");
      } else if (ev.e === "item" && ev.i === this.me) {
        notice(`You picked up: ${itemName(ev.c)}`, "info");
      } else if (ev.e === "boss") {
        notice(`A ${ev.c} appeared!`, "info");
      }
    },

    // A join (or a new socket) replays the room's recent lines: show each line once.
    onChat(f) {
      const key = typeof f.seq === "number" ? `#${f.seq}` : `${f.at}|${f.from}|${f.text}`;
      if (this.chatSeen.has(key)) return;
      this.chatSeen.add(key);
      if (this.chatSeen.size > 4 * MAX_CHAT_LINES) this.chatSeen = new Set([...this.chatSeen].slice(-MAX_CHAT_LINES));
      chatLine(f.from, f.text);
    },

    onLeft(reason) {
      this.stop();
      store.removeItem(KEYS.room);
      if (reason && reason !== "left") notice(`You left the room (${reason}).`);
      showRooms().catch((e) => notice(e.message));
    },

    onError(f) {
      if (typeof f.n === "number") {
        // A refused move: forget the prediction and take the server's position again.
        if (this.pending.some((m) => m.n === f.n)) this.pending = [];
      }
      if (f.code === "no_seat") return this.reseat();
      if (f.code === "blocked" || f.code === "cooldown" || f.code === "no_target") return; // common while playing
      notice(`${f.code}: ${f.message || ""}`);
    },

    // The seat was lost (the grace window passed): ask for one again once.
    async reseat() {
      const character = currentCharacter();
      if (!this.wanted || !character || this.reseated) return this.onLeft("no seat");
      this.reseated = true;
      try {
        await api("POST", `/game/rooms/${encodeURIComponent(this.room)}/join`, { character: character.id });
        this.send({ t: "join", room: this.room });
      } catch (error) {
        notice(error.message);
        this.onLeft("no seat");
      }
    },

    async loadZone(zone) {
      const map = await api("GET", `/game/maps/${encodeURIComponent(zone)}`);
      if (zone !== this.zoneName) return; // another zone was entered meanwhile
      this.zone = map;
      const tile = Math.max(8, Math.floor(Math.min(canvas.width / map.width, canvas.height / map.height)));
      this.tile = tile;
      const off = document.createElement("canvas");
      off.width = map.width * tile;
      off.height = map.height * tile;
      const g = off.getContext("2d");
      for (let y = 0; y < map.height; y++) {
        const row = map.tiles[y];
        for (let x = 0; x < map.width; x++) {
          const kind = map.legend[row[x]] || "wall";
          g.fillStyle = TILE_COLORS[kind] || "#000";
          g.fillRect(x * tile, y * tile, tile, tile);
          if (kind === "wall") {
            g.fillStyle = "rgba(0,0,0,.25)";
            g.fillRect(x * tile, y * tile + tile - 3, tile, 3);
          }
        }
      }
      for (const p of map.portals || []) {
        g.strokeStyle = "#c9a0ff";
        g.lineWidth = 2;
        g.strokeRect(p.x * tile + 2, p.y * tile + 2, tile - 4, tile - 4);
      }
      this.tiles = off;
      canvas.dataset.zone = zone;
    },

    walkable(x, y) {
      const map = this.zone;
      if (!map || x < 0 || y < 0 || x >= map.width || y >= map.height) return false;
      return map.legend[map.tiles[y][x]] === "floor";
    },

    setTick(k) {
      if (typeof k !== "number") return;
      this.tick = k;
      $("tick").textContent = String(k);
    },

    ping() {
      this.send({ t: "ping", c: performance.now() });
    },

    reconcile(n) {
      this.applied = Math.max(this.applied, n);
      this.pending = this.pending.filter((m) => m.n > this.applied);
    },

    // Where one's own player is drawn and moves from: the last move sent and not
    // yet applied, else where the server has it.
    predicted() {
      const me = this.ents.get(this.me);
      if (!me) return null;
      const last = this.pending[this.pending.length - 1];
      return last ? { x: last.x, y: last.y } : { x: me.x, y: me.y };
    },

    // Called every frame: send a move while a direction is held, paced by the step time.
    steer(now) {
      if (!this.held.size || !this.ws) return;
      const me = this.ents.get(this.me);
      if (!me || me.d) return;
      const stepMs = (this.you.step_ms || 200) + STEP_SLACK_MS;
      if (now - this.lastMoveAt < stepMs || this.pending.length >= MAX_PENDING_MOVES) return;
      let dx = 0;
      let dy = 0;
      for (const code of this.held) {
        dx += DIRS[code][0];
        dy += DIRS[code][1];
      }
      dx = Math.sign(dx);
      dy = Math.sign(dy);
      if (!dx && !dy) return;
      const from = this.predicted();
      let to = { x: from.x + dx, y: from.y + dy };
      if (!this.walkable(to.x, to.y)) {
        // Slide along a wall: try the straight part of a diagonal.
        if (dx && dy && this.walkable(from.x + dx, from.y)) to = { x: from.x + dx, y: from.y };
        else if (dx && dy && this.walkable(from.x, from.y + dy)) to = { x: from.x, y: from.y + dy };
        else return;
      }
      this.inputN += 1;
      if (!this.send({ t: "move", n: this.inputN, x: to.x, y: to.y })) return;
      this.pending.push({ n: this.inputN, x: to.x, y: to.y });
      this.lastMoveAt = now;
    },

    attack() {
      const me = this.ents.get(this.me);
      if (!me || me.d) return;
      const now = performance.now();
      if (now - this.lastAttackAt < (this.you.attack_ms || 600)) return;
      this.inputN += 1;
      if (this.send({ t: "attack", n: this.inputN })) this.lastAttackAt = now;
    },

    showYou() {
      const you = this.you;
      if (you.hp !== undefined) $("hp").textContent = `${you.hp}/${you.H}`;
      if (you.l !== undefined) $("level").textContent = `${you.l} (${you.xp ?? 0}/${you.nx ?? "?"} xp)`;
      this.showInventory();
    },

    // Own inventory (`you.bag`, `you.wpn`, `you.arm`): redrawn only when it changed.
    showInventory() {
      const you = this.you;
      const key = JSON.stringify([you.bag, you.wpn, you.arm, you.dmg, you.def]);
      if (key === this.inventoryShown) return;
      this.inventoryShown = key;
      const bag = you.bag || [];
      $("inv-count").textContent = `${bag.length}/${INVENTORY_SIZE}`;
      const worn = $("worn");
      worn.replaceChildren(document.createTextNode(`Attack ${you.dmg ?? "?"}, defence ${you.def ?? 0}. `));
      for (const [slot, item] of [["weapon", you.wpn], ["armour", you.arm]]) {
        if (!item) continue;
        const off = element("button", "off", { type: "button", "data-slot": slot, title: `take off the ${itemName(item)}` });
        off.addEventListener("click", () => this.itemInput({ t: "unequip", slot }));
        worn.append(element("span", `${slot}: ${itemName(item)} `), off, document.createTextNode(" "));
      }
      const rows = bag.map((item) => {
        const li = element("li", null, { "data-item": item });
        li.append(element("b", itemName(item)));
        const usable = (ITEMS[item] || {}).slot === "potion";
        const act = element("button", usable ? "use" : "equip", { type: "button" });
        act.addEventListener("click", () => this.itemInput({ t: usable ? "use" : "equip", item }));
        const drop = element("button", "drop", { type: "button" });
        drop.addEventListener("click", () => this.itemInput({ t: "drop", item }));
        li.append(act, drop);
        return li;
      });
      $("inventory").replaceChildren(...rows);
    },

    itemInput(frame) {
      this.inputN += 1;
      this.send({ ...frame, n: this.inputN });
      canvas.focus();
    },

    // The player list beside the canvas; the test reads positions from it too.
    showPlayers() {
      const list = $("players");
      const rows = [];
      for (const e of this.ents.values()) {
        if (e.k !== "p") continue;
        const li = element("li", null, { "data-id": e.i, "data-name": e.n || "", "data-x": e.x, "data-y": e.y });
        if (e.i === this.me) li.dataset.me = "1";
        li.append(element("b", e.n || e.i), element("span", `(${e.x}, ${e.y}) ${e.d ? "dead" : `${e.h}/${e.H}`}`, { class: "muted" }));
        rows.push(li);
      }
      list.replaceChildren(...rows);
    },

    // Darken what lies beyond the view radius: the server sends nothing from there.
    shadeOutOfView(now) {
      const me = this.ents.get(this.me);
      const r = this.radius;
      if (!me || !r || !this.zone) return;
      const t = this.tile;
      const at = glide(me, now);
      const x0 = Math.max(0, (at.x - r) * t);
      const y0 = Math.max(0, (at.y - r) * t);
      const x1 = Math.min(this.zone.width * t, (at.x + r + 1) * t);
      const y1 = Math.min(this.zone.height * t, (at.y + r + 1) * t);
      const w = this.zone.width * t;
      const h = this.zone.height * t;
      ctx.fillStyle = "rgba(0,0,0,.35)";
      ctx.fillRect(0, 0, w, y0);
      ctx.fillRect(0, y1, w, h - y1);
      ctx.fillRect(0, y0, x0, y1 - y0);
      ctx.fillRect(x1, y0, w - x1, y1 - y0);
    },

    draw(now) {
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      if (!this.tiles) return;
      ctx.drawImage(this.tiles, 0, 0);
      const t = this.tile;
      this.shadeOutOfView(now);
      const ordered = [...this.ents.values()].sort((a, b) => kindOrder(a) - kindOrder(b));
      for (const e of ordered) {
        let { x, y } = glide(e, now);
        if (e.i === this.me && this.pending.length) {
          const p = this.predicted();
          ({ x, y } = glide(predictedGlide(e, p, now), now));
        }
        const cx = x * t + t / 2;
        const cy = y * t + t / 2;
        ctx.globalAlpha = e.d ? 0.35 : 1;
        if (e.k === "g") {
          ctx.fillStyle = "#f2c84b";
          ctx.beginPath();
          ctx.arc(cx, cy, t * 0.25, 0, Math.PI * 2);
          ctx.fill();
        } else if (e.k === "i") {
          const s = t * 0.3;
          ctx.fillStyle = ITEM_COLORS[(ITEMS[e.c] || {}).slot] || "#ddd";
          ctx.beginPath();
          ctx.moveTo(cx, cy - s);
          ctx.lineTo(cx + s, cy);
          ctx.lineTo(cx, cy + s);
          ctx.lineTo(cx - s, cy);
          ctx.closePath();
          ctx.fill();
        } else if (e.k === "m") {
          ctx.fillStyle = MONSTER_COLORS[e.c] || "#c33";
          const s = e.c === "dragon" ? t * 0.9 : t * 0.6;
          ctx.fillRect(cx - s / 2, cy - s / 2, s, s);
          healthBar(cx, cy - t * 0.55, t, e);
        } else {
          ctx.fillStyle = CLASS_COLORS[e.c] || "#eee";
          ctx.beginPath();
          ctx.arc(cx, cy, t * 0.38, 0, Math.PI * 2);
          ctx.fill();
          if (e.i === this.me) {
            ctx.strokeStyle = "#fff";
            ctx.lineWidth = 2;
            ctx.stroke();
          }
          healthBar(cx, cy - t * 0.6, t, e);
          ctx.fillStyle = "#fff";
          ctx.font = `${Math.max(10, t * 0.5)}px system-ui, sans-serif`;
          ctx.textAlign = "center";
          ctx.fillText(e.n || e.i, cx, cy - t * 0.75);
        }
        if (e.flash && now - e.flash < 150) {
          ctx.fillStyle = "rgba(255,60,60,.5)";
          ctx.fillRect(x * t, y * t, t, t);
        }
        ctx.globalAlpha = 1;
      }
    },
  };

  // An entity's drawing state: where it glides from and to, and since when.
  function place(e, now, jump) {
    const from = jump || e.gx === undefined ? { x: e.x, y: e.y } : glide(e, now);
    e.fx = from.x;
    e.fy = from.y;
    e.gx = e.x;
    e.gy = e.y;
    e.gt = now;
    return e;
  }

  function glide(e, now) {
    if (e.gt === undefined) return { x: e.x, y: e.y };
    const f = Math.min(1, (now - e.gt) / GLIDE_MS);
    return { x: e.fx + (e.gx - e.fx) * f, y: e.fy + (e.gy - e.fy) * f };
  }

  // Own player, drawn where its moves will put it (glides there from where it is drawn).
  const predictedState = { fx: 0, fy: 0, gx: 0, gy: 0, gt: 0 };
  function predictedGlide(e, p, now) {
    if (predictedState.gx !== p.x || predictedState.gy !== p.y) {
      const from = predictedState.gt ? glide(predictedState, now) : glide(e, now);
      Object.assign(predictedState, { fx: from.x, fy: from.y, gx: p.x, gy: p.y, gt: now });
    }
    return predictedState;
  }

  function kindOrder(e) {
    return e.k === "g" || e.k === "i" ? 0 : e.k === "m" ? 1 : 2;
  }

  function healthBar(cx, top, t, e) {
    if (!e.H || e.d) return;
    const w = t * 0.8;
    ctx.fillStyle = "#300";
    ctx.fillRect(cx - w / 2, top, w, 3);
    ctx.fillStyle = "#e33";
    ctx.fillRect(cx - w / 2, top, (w * Math.max(0, e.h)) / e.H, 3);
  }

  function status(text, kind) {
    const el = $("conn");
    el.textContent = text;
    el.className = kind || "muted";
  }

  function itemName(kind) {
    return (ITEMS[kind] || {}).name || kind;
  }

  function chatLine(from, text) {
    const list = $("chat");
    const li = element("li");
    li.append(element("span", `${from}: `, { class: "from" }), document.createTextNode(text));
    list.append(li);
    while (list.children.length > MAX_CHAT_LINES) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  function showGold(balance) {
    const el = $("gold");
    el.textContent = String(balance);
    el.dataset.gold = String(balance);
  }

  async function loadItems() {
    if (Object.keys(ITEMS).length) return;
    try {
      ITEMS = await api("GET", "/game/items");
      game.inventoryShown = null;
      game.showInventory();
    } catch (error) {
      if (error.status !== 401) notice(`Items: ${error.message}`);
    }
  }

  async function refreshGold() {
    try {
      const { balance } = await api("GET", "/game/gold");
      showGold(balance);
    } catch (error) {
      if (error.status !== 401) notice(`Gold: ${error.message}`);
    }
  }

  $("leave").addEventListener("click", () => {
    if (!game.send({ t: "leave" })) game.onLeft("left");
  });

  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("chat-text");
    const text = input.value.trim();
    if (text && game.send({ t: "say", text })) input.value = "";
    canvas.focus();
  });

  // Keys: only while the game is shown and no text field has the focus.
  function playing(event) {
    if (document.body.dataset.view !== "game-view") return false;
    const tag = event.target && event.target.tagName;
    return tag !== "INPUT" && tag !== "SELECT" && tag !== "TEXTAREA";
  }

  window.addEventListener("keydown", (event) => {
    if (!playing(event)) return;
    if (event.code in DIRS) {
      game.held.add(event.code);
      event.preventDefault();
      game.steer(performance.now());
    } else if (event.code === "Space") {
      event.preventDefault();
      if (!event.repeat) game.attack();
    } else if (event.code === "Enter") {
      event.preventDefault();
      $("chat-text").focus();
    }
  });
  window.addEventListener("keyup", (event) => {
    game.held.delete(event.code);
  });
  window.addEventListener("blur", () => game.held.clear());

  function frame(now) {
    game.steer(now);
    game.draw(now);
    requestAnimationFrame(frame);
  }

  // --- start: resume what this tab was doing ---------------------------------------
  async function boot() {
    if (!store.getItem(KEYS.token)) return show("signin-view");
    try {
      const room = store.getItem(KEYS.room);
      if (room && currentCharacter()) return game.start(room);
      if (currentCharacter()) return await showRooms();
      await showCharacters();
    } catch (error) {
      if (error.status !== 401) notice(error.message);
    }
  }

  requestAnimationFrame(frame);
  boot();
})();
