-- Pause to disk (microvm) and usage metering.
ALTER TABLE sandboxes ADD COLUMN paused_at TEXT;
ALTER TABLE sandboxes ADD COLUMN usage TEXT;
