-- Version 2: full-text search over the words said (caller, assistant, fallback): a generated
-- tsvector ('simple': no stemming, no stop words, any language) and its GIN index.
ALTER TABLE transcript ADD COLUMN words tsvector GENERATED ALWAYS AS (
    CASE WHEN kind IN ('caller', 'assistant', 'fallback')
         THEN to_tsvector('simple'::regconfig, text) END
) STORED;
CREATE INDEX transcript_words ON transcript USING gin (words);
