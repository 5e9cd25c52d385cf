//! In-context RL's demonstrations: what is drawn, what is left out, and how a prompt is built from them.

use minirec_train::demos::{Demo, DemoPool};
use minirec_train::rl::RlPrompt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn pool(n: u32) -> Vec<Demo> {
    (0..n)
        .map(|j| Demo {
            prompt: vec![100 + j],
            response: vec![200 + j, 9],
        })
        .collect()
}

fn prompt(t: u32) -> RlPrompt {
    RlPrompt {
        prompt: vec![t, 7],
        target: 0,
    }
}

#[test]
fn random_sets_are_distinct_shared_by_the_batch_and_leave_its_prompts_out() {
    let p = DemoPool::random(pool(10)).unwrap();
    // The batch's first prompt is demonstration 3's prompt, so demonstration 3 may not be drawn.
    let own = RlPrompt {
        prompt: vec![103],
        target: 0,
    };
    let other = prompt(50);
    let batch = [(0, &own), (1, &other)];
    for seed in 0..20 {
        let aug = p
            .augment(&batch, 2, 4, &mut ChaCha8Rng::seed_from_u64(seed))
            .unwrap();
        assert_eq!(aug.len(), 2);
        let mut used = Vec::new();
        for (b, rows) in aug.iter().enumerate() {
            assert_eq!(rows.len(), 4);
            for (r, t) in rows.iter().enumerate() {
                // Two demonstrations (prompt, title) then the prompt itself.
                assert_eq!(t.len(), 2 * 3 + batch[b].1.prompt.len());
                assert!(t.ends_with(&batch[b].1.prompt));
                assert_eq!(&t[..6], &aug[0][r][..6], "sets are shared by the batch");
                let ids = [t[0] - 100, t[3] - 100];
                assert_eq!(t[1], 200 + ids[0]);
                if b == 0 {
                    used.extend(ids);
                }
            }
        }
        assert!(
            !used.contains(&3),
            "the batch's own sample was a demonstration"
        );
        let n = used.len();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), n, "a demonstration was drawn twice");
    }
}

#[test]
fn retrieved_sets_follow_the_neighbour_order_and_skip_the_prompt_itself() {
    // Training prompt 0 is demonstration 2's sample; its neighbours are listed nearest first.
    let own = RlPrompt {
        prompt: vec![102],
        target: 0,
    };
    let p = DemoPool::retrieved(pool(6), vec![vec![2, 5, 1, 4, 0], vec![0, 1, 2, 3, 4]]).unwrap();
    let aug = p
        .augment(&[(0, &own)], 1, 3, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    let firsts: Vec<u32> = aug[0].iter().map(|t| t[0] - 100).collect();
    assert_eq!(firsts, vec![5, 1, 4]);
    assert!(p
        .augment(&[(0, &own)], 2, 3, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap_err()
        .to_string()
        .contains("retrieved demonstrations"));
    assert!(p
        .augment(&[(9, &own)], 1, 1, &mut ChaCha8Rng::seed_from_u64(1))
        .is_err());
    assert!(DemoPool::retrieved(pool(3), vec![vec![0, 3]]).is_err());
    assert!(DemoPool::random(Vec::new()).is_err());
}
