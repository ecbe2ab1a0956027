-- Version 4: what an outbound call (#16) was: endpoint, outcome, cause, amd, campaign... (JSON).
ALTER TABLE calls ADD COLUMN outbound TEXT;
