//! The binary cache's bounds: descriptors kept open and binaries held.

use std::path::PathBuf;
use std::sync::Arc;

use hearth_proc::{BinaryCache, BinaryKey, LoadError};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copies(tag: &str, n: usize) -> (Dir, Vec<String>) {
    let dir = std::env::temp_dir().join(format!("hearth-proc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let paths = (0..n)
        .map(|i| {
            let p = dir.join(format!("copy-{i}"));
            std::fs::copy(&exe, &p).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    (Dir(dir), paths)
}

fn get(cache: &mut BinaryCache, path: &str) -> Result<Arc<hearth_proc::Binary>, Arc<LoadError>> {
    let key = BinaryKey::Path(path.into());
    cache.get(&key, &path.into(), &[path.to_string()])
}

#[test]
fn descriptors_past_the_budget_are_not_kept_but_the_file_stays_reachable() {
    let (_dir, paths) = copies("descriptors", 4);
    let mut cache = BinaryCache::with_limits(2, 100);
    let held: Vec<_> = paths.iter().map(|p| get(&mut cache, p).unwrap()).collect();
    assert_eq!(cache.descriptors().open(), 2);
    assert_eq!(cache.stats.without_descriptor, 2);
    let without: Vec<_> = held.iter().filter(|b| !b.holds_descriptor()).collect();
    assert_eq!(without.len(), 2);
    for b in &without {
        // Reached through its own mapping (root may open map_files) or,
        // failing that, the path it was opened by: either way this file.
        let reached = std::fs::read(b.fd_path()).unwrap();
        assert_eq!(reached.len(), b.bytes().len(), "{}", b.fd_path());
    }
    // Dropping binaries gives their descriptors back.
    drop(held);
    assert_eq!(cache.evict_unused(), 4);
    assert_eq!(cache.descriptors().open(), 0);
}

#[test]
fn binaries_past_the_limit_are_refused_not_remembered() {
    let (_dir, paths) = copies("binaries", 3);
    let mut cache = BinaryCache::with_limits(8, 2);
    let a = get(&mut cache, &paths[0]).unwrap();
    let _b = get(&mut cache, &paths[1]).unwrap();
    let refused = get(&mut cache, &paths[2]).unwrap_err();
    assert!(
        matches!(*refused, LoadError::TooMany { limit: 2, .. }),
        "{refused}"
    );
    assert_eq!(cache.stats.over_limit, 1);
    assert_eq!(cache.len(), 2, "the refusal is not an entry");
    drop(a);
    cache.evict_unused();
    assert!(get(&mut cache, &paths[2]).is_ok(), "room again");
}
