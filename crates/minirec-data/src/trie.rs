//! The item trie: every distinct response's token sequence, for constrained decoding. Child look-up is one
//! hash probe (O(1)); children are also linked per node so the allowed next tokens can be listed; items can be
//! inserted at any time (new items); `to_csr` flattens it into arrays for the device-side mask.

use std::hash::Hash;

use rustc_hash::FxHashMap;

pub type NodeId = u32;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrieError {
    EmptySequence,
    TooManyNodes,
}

impl std::fmt::Display for TrieError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrieError::EmptySequence => f.write_str("an item's token sequence is empty"),
            TrieError::TooManyNodes => f.write_str("the trie has more than 2^32 - 1 nodes"),
        }
    }
}

impl std::error::Error for TrieError {}

/// What `insert` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new item ends at this node.
    New(NodeId),
    /// The sequence was already an item, with this value (left unchanged).
    Exists(NodeId, u32),
}

#[derive(Debug, Clone)]
struct Node<T> {
    token: Option<T>,
    first_child: u32,
    last_child: u32,
    next_sibling: u32,
    n_children: u32,
    value: u32,
}

#[derive(Debug, Clone)]
pub struct Trie<T> {
    nodes: Vec<Node<T>>,
    edges: FxHashMap<(NodeId, T), NodeId>,
    items: usize,
}

impl<T: Copy + Eq + Hash> Default for Trie<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Eq + Hash> Trie<T> {
    pub const ROOT: NodeId = 0;

    pub fn new() -> Self {
        Trie {
            nodes: vec![Node {
                token: None,
                first_child: NONE,
                last_child: NONE,
                next_sibling: NONE,
                n_children: 0,
                value: NONE,
            }],
            edges: FxHashMap::default(),
            items: 0,
        }
    }

    /// Builds a trie from `(sequence, value)` pairs; a repeated sequence keeps its first value.
    pub fn from_items<'a, I>(items: I) -> Result<Self, TrieError>
    where
        I: IntoIterator<Item = (&'a [T], u32)>,
        T: 'a,
    {
        let mut t = Self::new();
        for (seq, v) in items {
            t.insert(seq, v)?;
        }
        Ok(t)
    }

    /// Inserts an item's token sequence with a value (a title index, say). `value` must not be `u32::MAX`.
    pub fn insert(&mut self, seq: &[T], value: u32) -> Result<Inserted, TrieError> {
        assert_ne!(value, NONE, "u32::MAX is reserved");
        if seq.is_empty() {
            return Err(TrieError::EmptySequence);
        }
        let mut node = Self::ROOT;
        for &tok in seq {
            node = match self.edges.get(&(node, tok)) {
                Some(&c) => c,
                None => self.add_child(node, tok)?,
            };
        }
        let n = &mut self.nodes[node as usize];
        if n.value != NONE {
            return Ok(Inserted::Exists(node, n.value));
        }
        n.value = value;
        self.items += 1;
        Ok(Inserted::New(node))
    }

    fn add_child(&mut self, parent: NodeId, tok: T) -> Result<NodeId, TrieError> {
        let id = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&i| i != NONE)
            .ok_or(TrieError::TooManyNodes)?;
        self.nodes.push(Node {
            token: Some(tok),
            first_child: NONE,
            last_child: NONE,
            next_sibling: NONE,
            n_children: 0,
            value: NONE,
        });
        let p = &mut self.nodes[parent as usize];
        let prev_last = p.last_child;
        p.last_child = id;
        p.n_children += 1;
        if prev_last == NONE {
            p.first_child = id;
        } else {
            self.nodes[prev_last as usize].next_sibling = id;
        }
        self.edges.insert((parent, tok), id);
        Ok(id)
    }

    /// The child of `node` reached by `tok`.
    #[inline]
    pub fn child(&self, node: NodeId, tok: T) -> Option<NodeId> {
        self.edges.get(&(node, tok)).copied()
    }

    /// The node reached by a prefix from the root, if the prefix is in the trie.
    pub fn walk(&self, prefix: &[T]) -> Option<NodeId> {
        prefix
            .iter()
            .try_fold(Self::ROOT, |node, &tok| self.child(node, tok))
    }

    /// The tokens that may follow `node`, with the child each leads to, in insertion order.
    pub fn children(&self, node: NodeId) -> Children<'_, T> {
        Children {
            trie: self,
            next: self.nodes[node as usize].first_child,
        }
    }

    /// The tokens allowed after a prefix; empty when the prefix is not in the trie or ends a leaf.
    pub fn allowed(&self, prefix: &[T]) -> Vec<T> {
        self.walk(prefix)
            .map(|n| self.children(n).map(|(t, _)| t).collect())
            .unwrap_or_default()
    }

    /// How many distinct tokens may follow `node` (RISER's certainty-aware mask uses this).
    #[inline]
    pub fn num_children(&self, node: NodeId) -> usize {
        self.nodes[node as usize].n_children as usize
    }

    /// Whether an item ends at `node` (it may also continue: one title can prefix another).
    #[inline]
    pub fn is_end(&self, node: NodeId) -> bool {
        self.nodes[node as usize].value != NONE
    }

    /// The value of the item ending at `node`.
    #[inline]
    pub fn value(&self, node: NodeId) -> Option<u32> {
        Some(self.nodes[node as usize].value).filter(|&v| v != NONE)
    }

    pub fn contains(&self, seq: &[T]) -> bool {
        self.walk(seq).is_some_and(|n| self.is_end(n))
    }

    /// Number of items (distinct sequences).
    pub fn len(&self) -> usize {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Every item as (sequence, value), depth-first in insertion order of children.
    pub fn items(&self) -> Vec<(Vec<T>, u32)> {
        let mut out = Vec::with_capacity(self.items);
        let mut path = Vec::new();
        // An explicit stack of (node, entered) avoids recursion depth limits on long sequences.
        let mut stack: Vec<(NodeId, bool)> = vec![(Self::ROOT, false)];
        while let Some((node, entered)) = stack.pop() {
            let n = &self.nodes[node as usize];
            if entered {
                if n.token.is_some() {
                    path.pop();
                }
                continue;
            }
            if let Some(t) = n.token {
                path.push(t);
            }
            if n.value != NONE {
                out.push((path.clone(), n.value));
            }
            stack.push((node, true));
            let kids: Vec<NodeId> = self.children(node).map(|(_, c)| c).collect();
            stack.extend(kids.into_iter().rev().map(|c| (c, false)));
        }
        out
    }

    /// Flattens into compressed-sparse-row arrays (same node ids): the children of node `n` are
    /// `tokens[offsets[n]..offsets[n + 1]]`, leading to `targets[..]`; `values[n]` is `u32::MAX` unless an
    /// item ends at `n`.
    pub fn to_csr(&self) -> TrieCsr<T> {
        let mut offsets = Vec::with_capacity(self.nodes.len() + 1);
        let mut tokens = Vec::with_capacity(self.nodes.len().saturating_sub(1));
        let mut targets = Vec::with_capacity(self.nodes.len().saturating_sub(1));
        offsets.push(0u32);
        for node in 0..self.nodes.len() as NodeId {
            for (t, c) in self.children(node) {
                tokens.push(t);
                targets.push(c);
            }
            offsets.push(tokens.len() as u32);
        }
        TrieCsr {
            offsets,
            tokens,
            targets,
            values: self.nodes.iter().map(|n| n.value).collect(),
        }
    }
}

pub struct Children<'a, T> {
    trie: &'a Trie<T>,
    next: u32,
}

impl<T: Copy> Iterator for Children<'_, T> {
    type Item = (T, NodeId);
    fn next(&mut self) -> Option<Self::Item> {
        if self.next == NONE {
            return None;
        }
        let id = self.next;
        let n = &self.trie.nodes[id as usize];
        self.next = n.next_sibling;
        Some((n.token.expect("non-root node has a token"), id))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrieCsr<T> {
    pub offsets: Vec<u32>,
    pub tokens: Vec<T>,
    pub targets: Vec<u32>,
    pub values: Vec<u32>,
}

impl<T> TrieCsr<T> {
    pub const NO_VALUE: u32 = NONE;

    pub fn children(&self, node: NodeId) -> (&[T], &[u32]) {
        let (a, b) = (
            self.offsets[node as usize] as usize,
            self.offsets[node as usize + 1] as usize,
        );
        (&self.tokens[a..b], &self.targets[a..b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_catalog() {
        let mut t: Trie<u32> = Trie::new();
        assert_eq!(t.insert(&[1, 2, 3], 10).unwrap(), Inserted::New(3));
        assert!(matches!(
            t.insert(&[1, 2, 4], 11).unwrap(),
            Inserted::New(_)
        ));
        assert!(matches!(t.insert(&[1, 2], 12).unwrap(), Inserted::New(2)));
        assert_eq!(t.insert(&[1, 2, 3], 99).unwrap(), Inserted::Exists(3, 10));
        assert_eq!(t.insert(&[], 1), Err(TrieError::EmptySequence));
        assert_eq!(t.len(), 3);
        assert_eq!(t.allowed(&[]), vec![1]);
        assert_eq!(t.allowed(&[1, 2]), vec![3, 4]);
        assert_eq!(t.allowed(&[1, 2, 3]), Vec::<u32>::new());
        assert_eq!(t.allowed(&[7]), Vec::<u32>::new());
        let n12 = t.walk(&[1, 2]).unwrap();
        assert!(t.is_end(n12));
        assert_eq!(t.value(n12), Some(12));
        assert_eq!(t.num_children(n12), 2);
        assert!(!t.is_end(t.walk(&[1]).unwrap()));
        assert_eq!(
            t.items(),
            vec![(vec![1, 2], 12), (vec![1, 2, 3], 10), (vec![1, 2, 4], 11)]
        );
        let csr = t.to_csr();
        assert_eq!(csr.children(n12).0, &[3, 4]);
        assert_eq!(csr.values[n12 as usize], 12);
    }
}
