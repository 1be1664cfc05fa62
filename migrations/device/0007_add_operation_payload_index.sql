-- Device operations (shell, logcat, screenshot, files) carry payloads in
-- their results: a pulled file, a screenshot, logs or shell output. The
-- control plane keeps them no longer than the agent keeps its copy (15
-- minutes after the operation finished); this partial index lets the job
-- that drops them find the few rows that still hold one. (A pushed file
-- leaves its command's body as soon as the push has an answer, found by
-- node_commands_operation.)
CREATE INDEX operations_payloads ON operations (finished_at)
    WHERE result ?| ARRAY['content_base64', 'png_base64', 'text', 'stdout', 'stderr'];
