-- Layouts go with their instances (issue 17): a retention deletion (studies cascading to
-- instances), a rejected instance deleted by a review, any deletion to come, removes the
-- object_layouts rows (0130) of the objects deleted.
--
-- Not a foreign key: a layout is keyed by the SHA-256 of the object's bytes, which is not a
-- key of instances, and ingest records it before the instance row exists (after the object
-- is durable).  A statement-level trigger sees every deleted row at once, cascades included,
-- and deletes by the layouts' primary key.  The SHA-256 of a Part 10 file names one
-- instance (its SOP Instance UID is in those bytes); and a layout is a cache of what the
-- bytes say, so even a row another instance still used would only cost that instance a
-- recomputation at its next frame retrieve, never a wrong answer.
CREATE FUNCTION vna_object_layouts_of_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM object_layouts l USING gone WHERE l.sha256 = gone.sha256;
    RETURN NULL;
END
$$;

CREATE TRIGGER instances_layouts_deleted AFTER DELETE ON instances
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION vna_object_layouts_of_deleted();

-- Layouts already left behind by deletions before this migration.
DELETE FROM object_layouts l
WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.sha256 = l.sha256);
