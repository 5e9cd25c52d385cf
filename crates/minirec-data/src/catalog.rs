//! The item catalog: external item ids ⇄ dense item indices ⇄ distinct titles. Several ids may share one
//! title; generation and evaluation work on titles, so each distinct title has its own dense index.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    ids: Vec<String>,
    item_title: Vec<u32>,
    titles: Vec<String>,
    id_index: FxHashMap<String, u32>,
    title_index: FxHashMap<String, u32>,
}

/// One line of `catalog.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CatalogEntry {
    pub id: String,
    pub title: String,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an item; returns its dense index. An id already present is an error.
    pub fn push(&mut self, id: &str, title: &str) -> Result<u32> {
        if self.id_index.contains_key(id) {
            return Err(DataError::Invalid(format!(
                "item id {id:?} is listed twice"
            )));
        }
        if title.trim().is_empty() {
            return Err(DataError::Invalid(format!(
                "item id {id:?} has an empty title"
            )));
        }
        let idx = u32::try_from(self.ids.len())
            .map_err(|_| DataError::Invalid("more than 2^32 items".into()))?;
        let next_title = self.titles.len() as u32;
        let t = *self
            .title_index
            .entry(title.to_string())
            .or_insert(next_title);
        if t == next_title {
            self.titles.push(title.to_string());
        }
        self.ids.push(id.to_string());
        self.item_title.push(t);
        self.id_index.insert(id.to_string(), idx);
        Ok(idx)
    }

    /// Number of item ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of distinct titles.
    pub fn num_titles(&self) -> usize {
        self.titles.len()
    }

    pub fn id(&self, item: u32) -> &str {
        &self.ids[item as usize]
    }

    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.id_index.get(id).copied()
    }

    /// The title index of an item.
    pub fn title_index_of_item(&self, item: u32) -> u32 {
        self.item_title[item as usize]
    }

    pub fn title_of_item(&self, item: u32) -> &str {
        &self.titles[self.item_title[item as usize] as usize]
    }

    /// The title of an item given by its external id.
    pub fn title_of_id(&self, id: &str) -> Option<&str> {
        self.index_of(id).map(|i| self.title_of_item(i))
    }

    pub fn title(&self, title_index: u32) -> &str {
        &self.titles[title_index as usize]
    }

    pub fn title_index(&self, title: &str) -> Option<u32> {
        self.title_index.get(title).copied()
    }

    /// Distinct titles, in order of first appearance.
    pub fn titles(&self) -> &[String] {
        &self.titles
    }

    /// The item indices that carry a title.
    pub fn items_with_title(&self, title_index: u32) -> Vec<u32> {
        (0..self.ids.len() as u32)
            .filter(|&i| self.item_title[i as usize] == title_index)
            .collect()
    }

    pub fn entries(&self) -> impl Iterator<Item = CatalogEntry> + '_ {
        (0..self.ids.len() as u32).map(|i| CatalogEntry {
            id: self.ids[i as usize].clone(),
            title: self.title_of_item(i).to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_titles_get_one_title_index() {
        let mut c = Catalog::new();
        assert_eq!(c.push("a", "Drill").unwrap(), 0);
        assert_eq!(c.push("b", "Saw").unwrap(), 1);
        assert_eq!(c.push("c", "Drill").unwrap(), 2);
        assert_eq!(c.len(), 3);
        assert_eq!(c.num_titles(), 2);
        assert_eq!(c.title_index_of_item(2), 0);
        assert_eq!(c.items_with_title(0), vec![0, 2]);
        assert_eq!(c.title_of_id("c"), Some("Drill"));
        assert_eq!(c.title_index("Saw"), Some(1));
        assert!(c.push("a", "Other").is_err());
        assert!(c.push("d", "  ").is_err());
    }
}
