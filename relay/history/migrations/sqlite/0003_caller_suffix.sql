-- Version 3: "the number ends with these digits" as an index range: the caller's digits, last
-- first (relay_reversed_digits is registered by the store on every connection).
ALTER TABLE calls ADD COLUMN caller_digits_rev TEXT NOT NULL DEFAULT '';
UPDATE calls SET caller_digits_rev = relay_reversed_digits(caller_number);
CREATE INDEX calls_caller_digits ON calls (caller_digits_rev, started_at);
