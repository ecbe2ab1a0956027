-- Version 3: "the number ends with these digits" as an index range: the caller's digits, last first.
ALTER TABLE calls ADD COLUMN caller_digits_rev text COLLATE "C" NOT NULL DEFAULT '';
UPDATE calls SET caller_digits_rev = reverse(regexp_replace(caller_number, '[^0-9]', '', 'g'));
CREATE INDEX calls_caller_digits ON calls (caller_digits_rev, started_at);
