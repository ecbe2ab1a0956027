-- Version 2: full-text search over the words said (caller, assistant, fallback), FTS5 with the
-- transcript table as its external content, kept in step by triggers.
CREATE VIRTUAL TABLE transcript_words USING fts5 (
    text, content = 'transcript', content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 0'
);

INSERT INTO transcript_words (rowid, text)
    SELECT rowid, text FROM transcript WHERE kind IN ('caller', 'assistant', 'fallback');

CREATE TRIGGER transcript_words_insert AFTER INSERT ON transcript
    WHEN new.kind IN ('caller', 'assistant', 'fallback')
BEGIN
    INSERT INTO transcript_words (rowid, text) VALUES (new.rowid, new.text);
END;

CREATE TRIGGER transcript_words_delete AFTER DELETE ON transcript
    WHEN old.kind IN ('caller', 'assistant', 'fallback')
BEGIN
    INSERT INTO transcript_words (transcript_words, rowid, text) VALUES ('delete', old.rowid, old.text);
END;

CREATE TRIGGER transcript_words_update AFTER UPDATE ON transcript
BEGIN
    INSERT INTO transcript_words (transcript_words, rowid, text)
        SELECT 'delete', old.rowid, old.text WHERE old.kind IN ('caller', 'assistant', 'fallback');
    INSERT INTO transcript_words (rowid, text)
        SELECT new.rowid, new.text WHERE new.kind IN ('caller', 'assistant', 'fallback');
END;
