-- The origin's own outcomes per minute (checkout attempts and errors), for the alerts'
-- baselines. Tallied in memory and added here once per job round, so no checkout waits on a
-- hot counter row.
CREATE TABLE outcome_counts (
    minute  BIGINT NOT NULL,
    name    TEXT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (minute, name)
);
