-- GPUs: each node reports its render nodes (`/dev/dri/renderD128`, ...);
-- an operator sets how many devices share one GPU (`gpu_slots`). A device
-- whose spec needs a GPU (gpu_mode host or auto) holds one slot of one of
-- its node's GPUs, chosen when it is placed and given to its agent as
-- redroid's `androidboot.redroid_gpu_node`. The primary key makes a slot
-- impossible to give twice, whatever the code above it does; the slot is
-- released when the device is gone.
ALTER TABLE nodes ADD COLUMN gpu_devices text[] NOT NULL DEFAULT '{}';
ALTER TABLE nodes ADD COLUMN gpu_slots integer NOT NULL DEFAULT 1 CHECK (gpu_slots BETWEEN 1 AND 64);
ALTER TABLE devices ADD COLUMN gpu_device text;

CREATE TABLE gpu_allocations (
    node_id      text NOT NULL REFERENCES nodes (id),
    gpu          text NOT NULL,
    slot         integer NOT NULL CHECK (slot >= 0),
    device_id    uuid NOT NULL UNIQUE REFERENCES devices (id),
    allocated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (node_id, gpu, slot)
);
