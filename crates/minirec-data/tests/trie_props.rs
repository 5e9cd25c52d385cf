//! The item trie against brute force over random catalogs.

use std::collections::{BTreeMap, BTreeSet};

use minirec_data::trie::{Inserted, Trie};
use proptest::prelude::*;

/// Small alphabets and lengths make shared prefixes, prefix-of-another items and duplicates common.
fn catalog() -> impl Strategy<Value = Vec<Vec<u16>>> {
    prop::collection::vec(prop::collection::vec(0u16..6, 1..7), 1..40)
}

fn brute_allowed(items: &[Vec<u16>], prefix: &[u16]) -> BTreeSet<u16> {
    items
        .iter()
        .filter(|s| s.len() > prefix.len() && s.starts_with(prefix))
        .map(|s| s[prefix.len()])
        .collect()
}

/// Every prefix of every item, plus some that are in no item.
fn probes(items: &[Vec<u16>]) -> Vec<Vec<u16>> {
    let mut p: BTreeSet<Vec<u16>> = BTreeSet::new();
    for s in items {
        for k in 0..=s.len() {
            p.insert(s[..k].to_vec());
        }
        let mut off = s.clone();
        off.push(6);
        p.insert(off);
    }
    p.insert(vec![7, 7]);
    p.into_iter().collect()
}

fn check(trie: &Trie<u16>, items: &[Vec<u16>]) {
    // First value inserted for each distinct sequence.
    let mut first: BTreeMap<&[u16], u32> = BTreeMap::new();
    for (v, s) in items.iter().enumerate() {
        first.entry(s.as_slice()).or_insert(v as u32);
    }
    assert_eq!(trie.len(), first.len());
    for p in probes(items) {
        let want = brute_allowed(items, &p);
        let got: BTreeSet<u16> = trie.allowed(&p).into_iter().collect();
        assert_eq!(got, want, "allowed after {p:?}");
        let node = trie.walk(&p);
        let is_prefix = items.iter().any(|s| s.starts_with(&p));
        assert_eq!(node.is_some(), is_prefix, "walk {p:?}");
        if let Some(n) = node {
            assert_eq!(trie.num_children(n), want.len());
            assert_eq!(
                trie.is_end(n),
                first.contains_key(p.as_slice()),
                "end {p:?}"
            );
            assert_eq!(trie.value(n), first.get(p.as_slice()).copied());
            for &t in &want {
                let c = trie.child(n, t).expect("allowed child exists");
                assert_eq!(Some(c), trie.walk(&[p.as_slice(), &[t]].concat()));
            }
        }
        assert_eq!(trie.contains(&p), first.contains_key(p.as_slice()));
    }
    let listed: BTreeMap<Vec<u16>, u32> = trie.items().into_iter().collect();
    let want: BTreeMap<Vec<u16>, u32> = first.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
    assert_eq!(listed, want);
    // The CSR arrays describe the same graph.
    let csr = trie.to_csr();
    assert_eq!(csr.offsets.len(), trie.num_nodes() + 1);
    for n in 0..trie.num_nodes() as u32 {
        let (toks, kids) = csr.children(n);
        let direct: Vec<(u16, u32)> = trie.children(n).collect();
        assert_eq!(
            toks.iter()
                .copied()
                .zip(kids.iter().copied())
                .collect::<Vec<_>>(),
            direct
        );
        assert_eq!(csr.values[n as usize] != u32::MAX, trie.is_end(n));
    }
}

proptest! {
    #[test]
    fn trie_matches_brute_force(items in catalog()) {
        let mut trie = Trie::new();
        for (v, s) in items.iter().enumerate() {
            let r = trie.insert(s, v as u32).unwrap();
            let before = items[..v].iter().position(|x| x == s);
            match (r, before) {
                (Inserted::New(_), None) => {}
                (Inserted::Exists(_, old), Some(i)) => prop_assert_eq!(old, i as u32),
                other => prop_assert!(false, "insert of {:?} gave {:?}", s, other),
            }
        }
        check(&trie, &items);
    }

    #[test]
    fn incremental_insertion_matches_a_fresh_build(items in catalog(), cut in 0usize..40) {
        let cut = cut.min(items.len());
        let mut trie = Trie::from_items(items[..cut].iter().enumerate().map(|(v, s)| (s.as_slice(), v as u32))).unwrap();
        check(&trie, &items[..cut]);
        for (v, s) in items.iter().enumerate().skip(cut) {
            trie.insert(s, v as u32).unwrap();
        }
        check(&trie, &items);
    }
}

#[test]
fn works_over_string_tokens_too() {
    let mut t: Trie<&str> = Trie::new();
    t.insert(&["\"", "Acme", " Drill", "\"\n"], 0).unwrap();
    t.insert(&["\"", "Acme", " Saw", "\"\n"], 1).unwrap();
    assert_eq!(t.allowed(&["\"", "Acme"]), vec![" Drill", " Saw"]);
}
