//! Independent jobs (an evaluation's batches) run on several lanes at once, each lane a thread with its own
//! small rayon pool, their results handed back in job order. On 2 Zen 4 cores one beam search on both threads
//! keeps them 164–168% busy (decoding a batch has serial stretches: trie lookups, beam bookkeeping, small
//! products); two 1-thread lanes keep them 185% busy and rank 1.14× the prompts per second (BENCHMARKS.md).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::{anyhow, Result};

/// Runs `work` on every job, `lanes` at a time, each lane inside a rayon pool of `threads` threads, and passes
/// each result to `done` in job order (so what `done` writes is the same for any number of lanes). A single
/// lane runs on the calling thread, in the global pool; with more, the calling thread only collects. The first error stops the lanes from taking new jobs and is
/// returned once the running ones finish; `done` sees only the results before it.
pub fn in_order<J, R, W, D>(
    jobs: &[J],
    lanes: usize,
    threads: usize,
    work: W,
    mut done: D,
) -> Result<()>
where
    J: Sync,
    R: Send,
    W: Fn(&J) -> Result<R> + Sync,
    D: FnMut(R) -> Result<()>,
{
    let lanes = lanes.clamp(1, jobs.len().max(1));
    if lanes == 1 {
        return jobs.iter().try_for_each(|j| done(work(j)?));
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<R>)>();
    std::thread::scope(|scope| {
        for _ in 0..lanes {
            let (tx, next, stop, work) = (tx.clone(), &next, &stop, &work);
            scope.spawn(move || {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads.max(1))
                    .build();
                let pool = match pool {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send((usize::MAX, Err(anyhow!("a lane's thread pool: {e}"))));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = pool.install(|| work(job));
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        collect_in_order(rx, &stop, &mut done)
    })
}

/// Receives `(job, result)` pairs in any order and passes the results on in job order, until the lanes hang up.
fn collect_in_order<R, D>(
    rx: mpsc::Receiver<(usize, Result<R>)>,
    stop: &AtomicBool,
    done: &mut D,
) -> Result<()>
where
    D: FnMut(R) -> Result<()>,
{
    let mut waiting: BTreeMap<usize, R> = BTreeMap::new();
    let (mut due, mut failure) = (0usize, None);
    for (i, r) in rx {
        let before_failure = failure.as_ref().is_none_or(|(j, _)| i < *j);
        match r {
            Ok(r) if before_failure => {
                waiting.insert(i, r);
            }
            Ok(_) => {}
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                // The earliest job's error is the one a single lane would have met first.
                if before_failure {
                    failure = Some((i, e));
                }
            }
        }
        while let Some(r) = waiting.remove(&due) {
            if let Err(e) = done(r) {
                stop.store(true, Ordering::Relaxed);
                failure = Some((due, e));
                break;
            }
            due += 1;
        }
    }
    failure.map_or(Ok(()), |(_, e)| Err(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_job_order_on_any_number_of_lanes() {
        let jobs: Vec<u64> = (0..23).collect();
        for lanes in [1, 2, 3, 8, 40] {
            let mut seen = Vec::new();
            in_order(
                &jobs,
                lanes,
                1,
                |&j| {
                    // Later jobs finish first, so the lanes hand results back out of order.
                    std::thread::sleep(std::time::Duration::from_millis((23 - j) % 5));
                    Ok(j * j)
                },
                |r| {
                    seen.push(r);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(
                seen,
                jobs.iter().map(|j| j * j).collect::<Vec<_>>(),
                "{lanes} lanes"
            );
        }
    }

    #[test]
    fn each_lane_runs_in_a_pool_of_the_given_size() {
        let jobs = [0u8; 6];
        let mut sizes = Vec::new();
        in_order(
            &jobs,
            2,
            3,
            |_| Ok(rayon::current_num_threads()),
            |n| {
                sizes.push(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(sizes, [3; 6]);
    }

    #[test]
    fn the_earliest_error_stops_the_lanes_and_only_results_before_it_are_handed_on() {
        let jobs: Vec<usize> = (0..50).collect();
        for lanes in [1, 2, 4] {
            let ran = AtomicUsize::new(0);
            let mut seen = Vec::new();
            let err = in_order(
                &jobs,
                lanes,
                1,
                |&j| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    if j == 7 || j == 9 {
                        anyhow::bail!("job {j} failed")
                    }
                    // Jobs that take a while, so the other lanes are still busy when one fails.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    Ok(j)
                },
                |r| {
                    seen.push(r);
                    Ok(())
                },
            )
            .unwrap_err();
            assert_eq!(err.to_string(), "job 7 failed", "{lanes} lanes");
            assert_eq!(seen, (0..7).collect::<Vec<_>>(), "{lanes} lanes");
            assert!(
                ran.load(Ordering::Relaxed) < 50,
                "{lanes} lanes ran every job"
            );
        }
    }

    #[test]
    fn an_error_from_the_receiver_stops_the_lanes() {
        let jobs: Vec<usize> = (0..40).collect();
        let ran = AtomicUsize::new(0);
        let err = in_order(
            &jobs,
            3,
            1,
            |&j| {
                ran.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(2));
                Ok(j)
            },
            |r| {
                if r == 4 {
                    anyhow::bail!("disk full")
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert!(ran.load(Ordering::Relaxed) < 40);
    }
}
