//! The embedded default dataset: a small shop with readable titles and sequences that have structure a
//! model can learn (users move along a category's product line, mostly one step at a time), written in the
//! generic format. Deterministic for a seed.

use std::io::Write;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};
use crate::fsutil::write_atomic;
use crate::generic::GenericFiles;

/// (brand, product types, variants): 5 × 5 = 25 items per category.
const CATEGORIES: [(&str, [&str; 5], [&str; 5]); 12] = [
    (
        "Voltex",
        [
            "Cordless Drill",
            "Impact Driver",
            "Hammer Drill",
            "Drill Bit Set",
            "Battery Pack",
        ],
        ["12V", "18V", "20V Max", "Brushless", "Compact"],
    ),
    (
        "Solderon",
        [
            "Soldering Iron",
            "Solder Wire",
            "Flux Pen",
            "Desoldering Pump",
            "Tip Cleaner",
        ],
        ["Lead-Free", "60/40", "Fine Tip", "Pro Kit", "Starter"],
    ),
    (
        "LabGrade",
        [
            "Beaker Set",
            "Graduated Cylinder",
            "Erlenmeyer Flask",
            "Pipette Pack",
            "Test Tube Rack",
        ],
        ["50 ml", "100 ml", "250 ml", "500 ml", "1 L"],
    ),
    (
        "Stitchwell",
        [
            "Nitrile Gloves",
            "Safety Glasses",
            "Ear Plugs",
            "Dust Mask",
            "Face Shield",
        ],
        ["Small", "Medium", "Large", "X-Large", "Value Pack"],
    ),
    (
        "PrintForge",
        [
            "PLA Filament",
            "PETG Filament",
            "Build Plate",
            "Nozzle Set",
            "Filament Dryer",
        ],
        ["Black", "White", "Red", "1.75 mm", "2.85 mm"],
    ),
    (
        "Meterix",
        [
            "Digital Multimeter",
            "Clamp Meter",
            "Test Leads",
            "Voltage Tester",
            "Insulation Tester",
        ],
        ["Basic", "True RMS", "Auto-Ranging", "Pocket", "Industrial"],
    ),
    (
        "FastenAll",
        [
            "Hex Bolt Kit",
            "Wood Screws",
            "Wall Anchors",
            "Washer Assortment",
            "Rivet Set",
        ],
        ["M3", "M4", "M5", "Stainless", "Zinc Plated"],
    ),
    (
        "AquaPure",
        [
            "Water Filter",
            "pH Test Strips",
            "TDS Meter",
            "Replacement Cartridge",
            "Filter Housing",
        ],
        ["Standard", "High Flow", "5 Micron", "10 Inch", "Twin"],
    ),
    (
        "GripTape",
        [
            "Duct Tape",
            "Electrical Tape",
            "Masking Tape",
            "Kapton Tape",
            "Double-Sided Tape",
        ],
        ["1 inch", "2 inch", "Black", "Heavy Duty", "6-Pack"],
    ),
    (
        "CleanSweep",
        [
            "Shop Vacuum",
            "Vacuum Filter",
            "Hose Extension",
            "Crevice Tool",
            "Dust Bags",
        ],
        ["2 Gallon", "5 Gallon", "Wet/Dry", "HEPA", "Pack of 10"],
    ),
    (
        "BrightArc",
        [
            "LED Work Light",
            "Headlamp",
            "Flashlight",
            "Lantern",
            "Rechargeable Battery",
        ],
        ["300 Lumen", "1000 Lumen", "USB-C", "Waterproof", "2-Pack"],
    ),
    (
        "SealTight",
        [
            "Silicone Sealant",
            "Epoxy Putty",
            "Super Glue",
            "Thread Locker",
            "Caulk Gun",
        ],
        ["Clear", "White", "Quick Set", "High Temp", "Gel"],
    ),
];

/// Items that are re-listed under a second id with the same title (real catalogs have ~3% of these).
const RELISTED: [usize; 6] = [3, 40, 77, 150, 201, 288];

pub const DEFAULT_USERS: usize = 800;

pub struct DemoCatalog {
    /// (id, title); the re-listed items come last.
    pub items: Vec<(String, String)>,
}

pub fn catalog() -> DemoCatalog {
    let mut items = Vec::new();
    for (brand, products, variants) in CATEGORIES {
        for p in products {
            for v in variants {
                items.push((format!("I{:03}", items.len()), format!("{brand} {p} {v}")));
            }
        }
    }
    for (k, &i) in RELISTED.iter().enumerate() {
        let title = items[i].1.clone();
        items.push((format!("R{k:02}"), title));
    }
    DemoCatalog { items }
}

/// Writes `interactions.csv` and `items.csv` into `dir` for `users` users.
pub fn write(dir: &Path, users: usize, seed: u64) -> Result<GenericFiles> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let cat = catalog();
    let per_cat = 25usize;
    let n_base = CATEGORIES.len() * per_cat;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows: Vec<(String, String, i64)> = Vec::new();
    for u in 0..users {
        let mut c = rng.random_range(0..CATEGORIES.len());
        let mut pos = rng.random_range(0..per_cat);
        let len = rng.random_range(6..=20);
        let mut t: i64 = 1_600_000_000 + rng.random_range(0..2_000_000);
        for _ in 0..len {
            let base = c * per_cat + pos;
            let id = match RELISTED.iter().position(|&r| r == base) {
                Some(k) if rng.random_bool(0.5) => cat.items[n_base + k].0.clone(),
                _ => cat.items[base].0.clone(),
            };
            rows.push((format!("U{u:04}"), id, t));
            t += rng.random_range(1_000..50_000);
            let r: f64 = rng.random();
            if r < 0.70 {
                pos = (pos + 1) % per_cat;
            } else if r < 0.85 {
                pos = (pos + 2) % per_cat;
            } else if r < 0.95 {
                pos = rng.random_range(0..per_cat);
            } else {
                c = rng.random_range(0..CATEGORIES.len());
                pos = rng.random_range(0..per_cat);
            }
        }
    }
    let files = GenericFiles {
        interactions: dir.join("interactions.csv"),
        items: dir.join("items.csv"),
    };
    write_atomic(&files.interactions, |w| {
        writeln!(w, "user,item,timestamp")?;
        for (u, i, t) in &rows {
            writeln!(w, "{u},{i},{t}")?;
        }
        Ok(())
    })?;
    write_atomic(&files.items, |w| {
        writeln!(w, "item,title")?;
        for (id, title) in &cat.items {
            // Titles may hold commas and quotes: quote every field the CSV way.
            writeln!(w, "{id},\"{}\"", title.replace('"', "\"\""))?;
        }
        Ok(())
    })?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_readable_unique_ids_and_some_shared_titles() {
        let c = catalog();
        assert_eq!(c.items.len(), 306);
        let ids: std::collections::HashSet<_> = c.items.iter().map(|x| &x.0).collect();
        assert_eq!(ids.len(), 306);
        let titles: std::collections::HashSet<_> = c.items.iter().map(|x| &x.1).collect();
        assert_eq!(titles.len(), 300);
        assert_eq!(c.items[0].1, "Voltex Cordless Drill 12V");
    }
}
