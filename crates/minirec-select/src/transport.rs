//! Exact optimal transport between two uniform discrete measures (GORACS's OT distance and its duals).
//!
//! The problem is a transportation problem on the complete bipartite graph rows → columns, solved with the
//! primal network simplex: a spanning tree over the rows, the columns and one artificial root; block-search
//! pricing; Cunningham's leaving-arc rule, which keeps the tree *strongly feasible* so that degenerate pivots
//! (frequent here: every row ships the same mass) cannot cycle. Masses are integers (cols/g per row, rows/g per
//! column, g = gcd), so flows are exact and only costs are floating point.
//!
//! A solved `Simplex` can be warm-started after one row's costs change (`replace_row`): the tree and flows stay
//! feasible, so the next solve starts from the old optimum. GORACS's swap search relies on that.

use crate::error::{Result, SelectError};

/// An optimal transport between uniform measures on `rows` and `cols` points.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Σ P_ij c_ij.
    pub cost: f64,
    /// Row and column duals: u_i + v_j ≤ c_ij everywhere, with equality where P_ij > 0, and
    /// Σ u_i / rows + Σ v_j / cols = cost. Centred as POT centres them (Σ u_i / rows = Σ v_j / cols).
    pub u: Vec<f64>,
    pub v: Vec<f64>,
    /// The cells with positive mass: (row, column, P_ij).
    pub plan: Vec<(usize, usize, f64)>,
    /// Pivots taken since the solver was built.
    pub pivots: usize,
}

const NONE: usize = usize::MAX;

/// The network simplex's state: costs, flows and the spanning tree.
#[derive(Debug, Clone)]
pub struct Simplex {
    rows: usize,
    cols: usize,
    cost: Vec<f64>,
    /// The artificial arcs' cost: above any path of real arcs, so they leave the tree.
    big: f64,
    /// Largest |c| this solver's `big` was sized for.
    bound: f64,
    eps: f64,
    /// Mass per row and per column.
    supply: i64,
    demand: i64,
    /// Flow per arc: real arcs (row·cols + col), then one artificial arc per row and per column.
    flow: Vec<i64>,
    in_tree: Vec<bool>,
    parent: Vec<usize>,
    /// The tree arc to the parent, and whether it points from the node to its parent.
    pred: Vec<usize>,
    up: Vec<bool>,
    depth: Vec<usize>,
    /// Node potentials: a tree arc a → b of cost c has c + π_a − π_b = 0.
    pi: Vec<f64>,
    adj: Vec<Vec<usize>>,
    next_arc: usize,
    pivots: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Simplex {
    /// A solver for `cost` (row-major, `rows × cols`, finite), starting from the all-artificial tree.
    pub fn new(cost: Vec<f64>, rows: usize, cols: usize) -> Result<Self> {
        if rows == 0 || cols == 0 || cost.len() != rows * cols {
            return Err(SelectError::Invalid(format!(
                "optimal transport: a {rows}×{cols} problem given {} costs",
                cost.len()
            )));
        }
        if let Some(k) = cost.iter().position(|c| !c.is_finite()) {
            return Err(SelectError::Invalid(format!(
                "optimal transport: cost of row {} column {} is not finite",
                k / cols,
                k % cols
            )));
        }
        let bound = cost.iter().fold(1.0f64, |m, c| m.max(c.abs()));
        let nodes = rows + cols + 1;
        let g = gcd(rows, cols);
        let real = rows * cols;
        let mut s = Simplex {
            rows,
            cols,
            big: 4.0 * bound * nodes as f64,
            bound,
            eps: 1e-12 * bound * nodes as f64,
            supply: (cols / g) as i64,
            demand: (rows / g) as i64,
            flow: vec![0; real + rows + cols],
            in_tree: vec![false; real + rows + cols],
            parent: vec![NONE; nodes],
            pred: vec![NONE; nodes],
            up: vec![false; nodes],
            depth: vec![0; nodes],
            pi: vec![0.0; nodes],
            adj: vec![Vec::new(); nodes],
            next_arc: 0,
            pivots: 0,
            cost,
        };
        let root = s.root();
        for node in 0..rows + cols {
            let a = real + node;
            s.flow[a] = if node < rows { s.supply } else { s.demand };
            s.in_tree[a] = true;
            s.adj[node].push(a);
            s.adj[root].push(a);
        }
        s.hang(root);
        Ok(s)
    }

    fn root(&self) -> usize {
        self.rows + self.cols
    }

    fn real(&self) -> usize {
        self.rows * self.cols
    }

    /// Tail and head of arc `a`. Artificial arcs run row → root and root → column.
    fn ends(&self, a: usize) -> (usize, usize) {
        let real = self.real();
        if a < real {
            (a / self.cols, self.rows + a % self.cols)
        } else if a - real < self.rows {
            (a - real, self.root())
        } else {
            (self.root(), a - real)
        }
    }

    fn arc_cost(&self, a: usize) -> f64 {
        if a < self.real() {
            self.cost[a]
        } else {
            self.big
        }
    }

    /// Recomputes parent, arc, depth and potential of every node below `top` from `top`'s own.
    fn hang(&mut self, top: usize) {
        let mut stack = vec![top];
        while let Some(w) = stack.pop() {
            for k in 0..self.adj[w].len() {
                let a = self.adj[w][k];
                if a == self.pred[w] {
                    continue;
                }
                let (t, h) = self.ends(a);
                let child = if t == w { h } else { t };
                self.attach(child, w, a);
                stack.push(child);
            }
        }
    }

    /// Makes `parent` the tree parent of `child` through arc `a`, with the potential that makes `a` tight.
    fn attach(&mut self, child: usize, parent: usize, a: usize) {
        let from_child = self.ends(a).0 == child;
        self.parent[child] = parent;
        self.pred[child] = a;
        self.up[child] = from_child;
        self.depth[child] = self.depth[parent] + 1;
        let c = self.arc_cost(a);
        self.pi[child] = if from_child {
            self.pi[parent] - c
        } else {
            self.pi[parent] + c
        };
    }

    fn reduced(&self, a: usize) -> f64 {
        let (t, h) = self.ends(a);
        self.arc_cost(a) + self.pi[t] - self.pi[h]
    }

    /// Block-search pricing over the real arcs: the most negative reduced cost in the first block that has one.
    fn entering(&mut self) -> Option<usize> {
        let real = self.real();
        let block = ((real as f64).sqrt() as usize).max(10).min(real);
        let (mut best, mut best_rc) = (NONE, -self.eps);
        let mut seen = 0;
        let mut a = self.next_arc;
        for _ in 0..real {
            if !self.in_tree[a] {
                let rc = self.reduced(a);
                if rc < best_rc {
                    best = a;
                    best_rc = rc;
                }
            }
            a = if a + 1 == real { 0 } else { a + 1 };
            seen += 1;
            if seen == block {
                if best != NONE {
                    break;
                }
                seen = 0;
            }
        }
        self.next_arc = a;
        (best != NONE).then_some(best)
    }

    fn join(&self, mut a: usize, mut b: usize) -> usize {
        while a != b {
            if self.depth[a] >= self.depth[b] {
                a = self.parent[a];
            } else {
                b = self.parent[b];
            }
        }
        a
    }

    /// One pivot on entering arc `e`, pushing flow tail → head around its cycle.
    fn pivot(&mut self, e: usize) -> Result<()> {
        let (first, second) = self.ends(e);
        let join = self.join(first, second);
        // Cunningham's rule: the last blocking arc met going round the cycle from the join, in the direction
        // of the flow (down the `first` side, across `e`, up the `second` side).
        let (mut delta, mut out, mut on_first) = (i64::MAX, NONE, false);
        let mut w = first;
        while w != join {
            if self.up[w] && self.flow[self.pred[w]] < delta {
                (delta, out, on_first) = (self.flow[self.pred[w]], w, true);
            }
            w = self.parent[w];
        }
        let mut w = second;
        while w != join {
            if !self.up[w] && self.flow[self.pred[w]] <= delta {
                (delta, out, on_first) = (self.flow[self.pred[w]], w, false);
            }
            w = self.parent[w];
        }
        if out == NONE {
            return Err(SelectError::Invalid(
                "optimal transport: unbounded cycle (a bug)".into(),
            ));
        }
        if delta > 0 {
            self.flow[e] += delta;
            for (start, sign) in [(first, -1), (second, 1)] {
                let mut w = start;
                while w != join {
                    let a = self.pred[w];
                    self.flow[a] += if self.up[w] {
                        sign * delta
                    } else {
                        -sign * delta
                    };
                    w = self.parent[w];
                }
            }
        }
        let leaving = self.pred[out];
        self.swap_tree_arc(leaving, e, if on_first { first } else { second });
        self.pivots += 1;
        Ok(())
    }

    /// Replaces tree arc `leaving` by `entering`, whose end `inner` lies in the subtree `leaving` cut off.
    fn swap_tree_arc(&mut self, leaving: usize, entering: usize, inner: usize) {
        let (t, h) = self.ends(leaving);
        self.adj[t].retain(|&a| a != leaving);
        self.adj[h].retain(|&a| a != leaving);
        self.in_tree[leaving] = false;
        let (t, h) = self.ends(entering);
        self.adj[t].push(entering);
        self.adj[h].push(entering);
        self.in_tree[entering] = true;
        let outer = if t == inner { h } else { t };
        self.attach(inner, outer, entering);
        self.hang(inner);
    }

    /// Pivots to optimality and returns the transport.
    pub fn solve(&mut self) -> Result<Transport> {
        let limit = self.pivots + 50 * self.real() + 10_000;
        while let Some(e) = self.entering() {
            if self.pivots >= limit {
                return Err(SelectError::Invalid(format!(
                    "optimal transport: no optimum after {} pivots",
                    self.pivots
                )));
            }
            self.pivot(e)?;
        }
        let real = self.real();
        if let Some(a) = (real..self.flow.len()).find(|&a| self.flow[a] != 0) {
            return Err(SelectError::Invalid(format!(
                "optimal transport: artificial arc {} keeps flow (a bug)",
                a - real
            )));
        }
        self.reconnect();
        Ok(self.transport())
    }

    /// Gives the real nodes one connected tree under a single artificial arc, shifting potentials of cut-off
    /// parts along a tightest crossing arc so that the duals are those of the real problem, not ±`big`.
    /// Only arcs into the part are used: with zero flow they point away from the root, keeping the tree
    /// strongly feasible for a warm start.
    fn reconnect(&mut self) {
        let root = self.root();
        while self.adj[root].len() > 1 {
            let a = self.adj[root][self.adj[root].len() - 1];
            let (t, h) = self.ends(a);
            let top = if t == root { h } else { t };
            let part = self.subtree(top);
            let mut best = (NONE, f64::INFINITY);
            for j in (0..self.cols).filter(|&j| part[self.rows + j]) {
                for i in (0..self.rows).filter(|&i| !part[i]) {
                    let rc = self.reduced(i * self.cols + j);
                    if rc < best.1 {
                        best = (i * self.cols + j, rc);
                    }
                }
            }
            let (arc, _) = best;
            if arc == NONE {
                break; // cannot happen at an optimum: every part holds a row and a column
            }
            let inner = self.ends(arc).1;
            self.swap_tree_arc(a, arc, inner);
        }
    }

    /// The nodes of the subtree under `top`.
    fn subtree(&self, top: usize) -> Vec<bool> {
        let mut inside = vec![false; self.parent.len()];
        inside[top] = true;
        let mut stack = vec![top];
        while let Some(w) = stack.pop() {
            for &a in &self.adj[w] {
                if a == self.pred[w] {
                    continue;
                }
                let (t, h) = self.ends(a);
                let child = if t == w { h } else { t };
                inside[child] = true;
                stack.push(child);
            }
        }
        inside
    }

    fn transport(&self) -> Transport {
        let total = (self.rows as i64 * self.supply) as f64;
        let mut cost = 0.0;
        let mut plan = Vec::new();
        for a in 0..self.real() {
            if self.flow[a] > 0 {
                let mass = self.flow[a] as f64 / total;
                cost += mass * self.cost[a];
                plan.push((a / self.cols, a % self.cols, mass));
            }
        }
        let mut u: Vec<f64> = (0..self.rows).map(|i| -self.pi[i]).collect();
        let mut v: Vec<f64> = (0..self.cols).map(|j| self.pi[self.rows + j]).collect();
        let mu = u.iter().sum::<f64>() / self.rows as f64;
        let mv = v.iter().sum::<f64>() / self.cols as f64;
        let shift = (mv - mu) / 2.0;
        u.iter_mut().for_each(|x| *x += shift);
        v.iter_mut().for_each(|x| *x -= shift);
        Transport {
            cost,
            u,
            v,
            plan,
            pivots: self.pivots,
        }
    }

    /// Gives row `row` new costs, keeping the current tree and flows (still feasible: masses do not change),
    /// so the next `solve` starts from there. Costs beyond the bound the solver was built for are refused.
    pub fn replace_row(&mut self, row: usize, costs: &[f64]) -> Result<()> {
        if row >= self.rows || costs.len() != self.cols {
            return Err(SelectError::Invalid(format!(
                "optimal transport: row {row} of {} given {} costs for {} columns",
                self.rows,
                costs.len(),
                self.cols
            )));
        }
        if costs.iter().any(|c| !c.is_finite() || c.abs() > self.bound) {
            return Err(SelectError::Invalid(format!(
                "optimal transport: new costs of row {row} outside the solver's bound {}",
                self.bound
            )));
        }
        let start = row * self.cols;
        self.cost[start..start + self.cols].copy_from_slice(costs);
        let root = self.root();
        self.hang(root);
        Ok(())
    }
}

/// The exact optimal transport between uniform measures on the rows and the columns of `cost`.
pub fn emd_uniform(cost: &[f64], rows: usize, cols: usize) -> Result<Transport> {
    Simplex::new(cost.to_vec(), rows, cols)?.solve()
}
