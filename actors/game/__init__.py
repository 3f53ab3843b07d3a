"""The game server (service 1): rooms of a small RPG with an authoritative tick loop.

Public face:

- ``client.GameClient``: characters, rooms, seats, gold, for the front and others;
- ``sim.Sim``, ``view.View``/``Snapshot``/``encode``, ``protocol.parse``: the
  room's logic without Ray (the benchmark's plain server uses them too);
- ``room.Room`` and ``room.GameRoomActor``: a room and its actor;
- ``world.load``: the zones of ``maps/*.json``.
"""
