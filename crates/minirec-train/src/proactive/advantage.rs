//! Advantages of a group of m path rollouts of one prompt.
//!
//! PSAE (ProRL): G_t = Σ_{k≥t} r_k (γ = 1); at each position t, the baseline b_t is the mean of G_t over the
//! rollouts still active there — those with an item at t, or whose end-of-path action falls at t (its G is 0);
//! A_t = G_t − b_t, and the end action at position n gets 0 − b_n. The naive estimator weights every action
//! of a rollout by its whole-path return minus the group's mean return.

/// One rollout's step rewards, and whether it chose to end (false: it stopped at the length limit).
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub rewards: Vec<f64>,
    pub ended: bool,
}

/// Each step's advantage, and the end action's (None when the rollout did not choose to end).
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    pub steps: Vec<f64>,
    pub end: Option<f64>,
}

fn returns(r: &Rollout) -> Vec<f64> {
    let mut g = vec![0.0; r.rewards.len()];
    let mut acc = 0.0;
    for (t, x) in r.rewards.iter().enumerate().rev() {
        acc += x;
        g[t] = acc;
    }
    g
}

/// Position-Specific Advantage Estimation over one group.
pub fn psae(group: &[Rollout]) -> Vec<Advantages> {
    let gs: Vec<Vec<f64>> = group.iter().map(returns).collect();
    let longest = group.iter().map(|r| r.rewards.len() + 1).max().unwrap_or(0);
    let baseline: Vec<f64> = (0..longest)
        .map(|t| {
            let active: Vec<f64> = group
                .iter()
                .zip(&gs)
                .filter_map(|(r, g)| match t.cmp(&r.rewards.len()) {
                    std::cmp::Ordering::Less => Some(g[t]),
                    std::cmp::Ordering::Equal if r.ended => Some(0.0),
                    _ => None,
                })
                .collect();
            match active.len() {
                0 => 0.0,
                n => active.iter().sum::<f64>() / n as f64,
            }
        })
        .collect();
    group
        .iter()
        .zip(gs)
        .map(|(r, g)| Advantages {
            steps: g.iter().zip(&baseline).map(|(g, b)| g - b).collect(),
            end: r.ended.then(|| -baseline[r.rewards.len()]),
        })
        .collect()
}

/// The naive estimator: every action weighted by the path's return minus the group's mean return.
pub fn whole_path(group: &[Rollout]) -> Vec<Advantages> {
    let total: Vec<f64> = group.iter().map(|r| r.rewards.iter().sum()).collect();
    let mean = total.iter().sum::<f64>() / group.len().max(1) as f64;
    group
        .iter()
        .zip(total)
        .map(|(r, t)| Advantages {
            steps: vec![t - mean; r.rewards.len()],
            end: r.ended.then_some(t - mean),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Vec<Rollout> {
        vec![
            Rollout {
                rewards: vec![1.0, 2.0],
                ended: true,
            },
            Rollout {
                rewards: vec![3.0],
                ended: true,
            },
            Rollout {
                rewards: vec![0.5, 0.5, 0.5],
                ended: false,
            },
        ]
    }

    #[test]
    fn psae_matches_hand_computed_baselines() {
        // Returns: [3, 2] + end, [3] + end, [1.5, 1, 0.5] (length limit). Baselines: position 0 over
        // {3, 3, 1.5} = 2.5; position 1 over {2, 0 (end), 1} = 1; position 2 over {0 (end), 0.5} = 0.25.
        let a = psae(&toy());
        assert_eq!(
            a[0],
            Advantages {
                steps: vec![0.5, 1.0],
                end: Some(-0.25)
            }
        );
        assert_eq!(
            a[1],
            Advantages {
                steps: vec![0.5],
                end: Some(-1.0)
            }
        );
        assert_eq!(
            a[2],
            Advantages {
                steps: vec![-1.0, 0.0, 0.25],
                end: None
            }
        );
    }

    #[test]
    fn whole_path_weights_every_action_by_the_centered_return() {
        // Returns 3, 3, 1.5; mean 2.5.
        let a = whole_path(&toy());
        assert_eq!(
            a[0],
            Advantages {
                steps: vec![0.5, 0.5],
                end: Some(0.5)
            }
        );
        assert_eq!(
            a[1],
            Advantages {
                steps: vec![0.5],
                end: Some(0.5)
            }
        );
        assert_eq!(
            a[2],
            Advantages {
                steps: vec![-1.0; 3],
                end: None
            }
        );
    }

    #[test]
    fn a_group_of_equal_rollouts_has_no_advantage() {
        let g = vec![
            Rollout {
                rewards: vec![0.7, -0.2],
                ended: true
            };
            4
        ];
        for a in psae(&g).into_iter().chain(whole_path(&g)) {
            assert!(
                a.steps.iter().chain(a.end.iter()).all(|x| x.abs() < 1e-12),
                "{a:?}"
            );
        }
    }
}
