-- A Kubernetes-mode worker asks which of the tries its namespace's pods run have ended
-- (worker.kubernetes.OrphanReaper), by uuid, in the history of ended tries too.
CREATE INDEX task_instance_history_uuid ON task_instance_history (uuid);
