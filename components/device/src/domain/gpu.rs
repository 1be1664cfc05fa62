//! GPU slots: which GPU of a node, and which of its slots, a device gets.
//! Devices spread over a node's GPUs (the least-used GPU first, in the
//! node's order on ties), and take the lowest free slot of it.

/// A GPU and slot for a new device on a node with `gpus` (render nodes,
/// in the node's order) of `slots` slots each, where `taken` are in use;
/// `None` when every slot is taken.
pub fn choose_slot(gpus: &[String], slots: i32, taken: &[(String, i32)]) -> Option<(String, i32)> {
    gpus.iter()
        .enumerate()
        .filter_map(|(order, gpu)| {
            let used: Vec<i32> = taken
                .iter()
                .filter(|(g, _)| g == gpu)
                .map(|(_, s)| *s)
                .collect();
            let free = (0..slots).find(|s| !used.contains(s))?;
            Some(((used.len(), order), (gpu.clone(), free)))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, choice)| choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus() -> Vec<String> {
        vec!["/dev/dri/renderD128".into(), "/dev/dri/renderD129".into()]
    }

    #[test]
    fn devices_spread_over_gpus_and_fill_the_lowest_free_slot() {
        let g = gpus();
        let mut taken = Vec::new();
        let mut order = Vec::new();
        while let Some(c) = choose_slot(&g, 2, &taken) {
            order.push(c.clone());
            taken.push(c);
        }
        assert_eq!(
            order,
            vec![
                (g[0].clone(), 0),
                (g[1].clone(), 0),
                (g[0].clone(), 1),
                (g[1].clone(), 1)
            ]
        );
        // A freed slot is taken again first.
        taken.retain(|(gpu, s)| !(gpu == &g[0] && *s == 0));
        assert_eq!(choose_slot(&g, 2, &taken), Some((g[0].clone(), 0)));
    }

    #[test]
    fn no_gpu_or_no_free_slot_gives_none() {
        assert_eq!(choose_slot(&[], 4, &[]), None);
        let g = gpus();
        let all: Vec<_> = g.iter().map(|x| (x.clone(), 0)).collect();
        assert_eq!(choose_slot(&g, 1, &all), None);
        // Slots a smaller setting no longer has do not count as free ones.
        let beyond = vec![(g[0].clone(), 5)];
        assert_eq!(choose_slot(&g[..1], 1, &beyond), Some((g[0].clone(), 0)));
    }
}
