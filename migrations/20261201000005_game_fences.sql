-- Fencing tokens (README, "Leases and fencing"). The game lease lives in
-- Redis, which can lose it; the token lives here, beside what it guards.
-- Whoever takes a game's lease then takes the next token; every commit of an
-- operation on the game checks, under this row's lock, that its token is
-- still the latest. A holder whose lease was lost and taken over can then
-- not commit, however late it wakes up.
CREATE TABLE game_fences (
    game_id text   PRIMARY KEY,
    token   bigint NOT NULL
);
