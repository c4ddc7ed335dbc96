//! CPU-local mirrors ("lanes"). Every FUSE request of a compile is a
//! round trip to a daemon thread: across CPUs each direction can be an
//! inter-processor interrupt (on the 2-vCPU VM in DESIGN.md, 70 µs per round
//! trip against 6.5 µs on one CPU). So the agent mounts one mirror per CPU
//! (per group of CPUs beyond `MAX_LANES`), its daemon thread pinned there;
//! a miss takes the lane with the fewest compiles in flight, and a
//! single-threaded compiler runs pinned to that lane's CPUs, so its round
//! trips stay on one CPU. Measured: the 200-file cold build at -j2, 7.2–8.2 s
//! with one shared mirror against 4.8–5.1 s with a mirror per CPU (plain
//! 3.0–3.5 s).

use cachefs_mirror::{Mirror, MirrorError, MirrorOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// More CPUs than this share lanes (each lane then spans several CPUs).
const MAX_LANES: usize = 8;

pub struct Lane {
    pub mirror: Mirror,
    /// The CPUs its daemon thread runs on, and a pinned compile too.
    pub cpus: Vec<usize>,
    in_flight: AtomicUsize,
    detached: AtomicBool,
}

#[derive(Default)]
pub struct Lanes {
    lanes: Vec<Lane>,
}

/// A lane taken by one compile until dropped.
pub struct Taken<'a> {
    pub lane: &'a Lane,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.lane.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Lanes {
    /// Mounts the lanes in `dir` (the agent's own, outside the cache
    /// directory: `fuse_mounts::place`): `mnt` (lane 0), `mnt-1`, …. The first
    /// mount's failure is the caller's (no observation at all); a later one
    /// only means fewer lanes.
    pub fn mount(dir: &Path, base: &MirrorOptions) -> Result<Lanes, MirrorError> {
        let groups = cpu_groups();
        let mut lanes = Vec::with_capacity(groups.len());
        for (i, cpus) in groups.into_iter().enumerate() {
            let options = MirrorOptions {
                threads: 1,
                cpus: cpus.clone(),
                ..base.clone()
            };
            match Mirror::mount(&mountpoint(dir, i), options) {
                Ok(mirror) => lanes.push(Lane {
                    mirror,
                    cpus,
                    in_flight: AtomicUsize::new(0),
                    detached: AtomicBool::new(false),
                }),
                Err(e) if i == 0 => return Err(e),
                Err(e) => {
                    log::warn!("mirror lane {i} not mounted ({e}); {i} lanes serve compiles");
                    break;
                }
            }
        }
        Ok(Lanes { lanes })
    }

    pub fn first(&self) -> Option<&Mirror> {
        self.lanes.first().map(|l| &l.mirror)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lane> {
        self.lanes.iter()
    }

    /// The live lane with the fewest compiles in flight (the lowest such).
    pub fn take(&self) -> Option<Taken<'_>> {
        let lane = self
            .lanes
            .iter()
            .filter(|l| l.mirror.is_alive())
            .min_by_key(|l| l.in_flight.load(Ordering::SeqCst))?;
        lane.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(Taken { lane })
    }

    /// Lanes whose mirror stopped (connection aborted), each once.
    pub fn newly_dead(&self) -> impl Iterator<Item = &Lane> {
        self.lanes
            .iter()
            .filter(|l| !l.mirror.is_alive() && !l.detached.swap(true, Ordering::SeqCst))
    }
}

fn mountpoint(dir: &Path, lane: usize) -> PathBuf {
    match lane {
        0 => dir.join("mnt"),
        n => dir.join(format!("mnt-{n}")),
    }
}

/// The CPUs this process may run on, dealt into at most `MAX_LANES` groups.
/// An agent started on demand inherits its starter's affinity (a build run
/// under `taskset -c 0` would leave every later build's compiles pinned to
/// CPU 0), so it first widens its own to every CPU; the kernel keeps it
/// within the cgroup's cpuset.
fn cpu_groups() -> Vec<Vec<usize>> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    let me = nix::unistd::Pid::from_raw(0);
    let mut every = CpuSet::new();
    for cpu in 0..CpuSet::count() {
        let _ = every.set(cpu);
    }
    if let Err(e) = sched_setaffinity(me, &every) {
        log::info!("agent keeps its inherited CPU affinity: {e}");
    }
    let allowed: Vec<usize> = sched_getaffinity(me)
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    groups_of(&allowed)
}

fn groups_of(allowed: &[usize]) -> Vec<Vec<usize>> {
    if allowed.is_empty() {
        return vec![Vec::new()];
    }
    let n = allowed.len().min(MAX_LANES);
    let mut groups = vec![Vec::new(); n];
    for (i, &cpu) in allowed.iter().enumerate() {
        groups[i % n].push(cpu);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_dealt_into_at_most_eight_lanes() {
        assert_eq!(groups_of(&[0, 1]), vec![vec![0], vec![1]]);
        assert_eq!(groups_of(&[3]), vec![vec![3]]);
        assert_eq!(groups_of(&[]), vec![Vec::<usize>::new()]);
        let many: Vec<usize> = (0..20).collect();
        let groups = groups_of(&many);
        assert_eq!(groups.len(), 8);
        assert_eq!(groups[0], vec![0, 8, 16]);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 20);
    }
}
