//! Stack interning as a prefix tree: `(parent, frame) -> id`.
//!
//! Stacks are interned root first, so that stacks sharing callers share
//! nodes; a stack is then a single `u32`. Walking a stack back to the root
//! yields its frames leaf first.

use std::collections::HashMap;

use crate::frame::RawFrame;

/// An interned stack. `StackId::EMPTY` is the stack with no frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u32);

impl StackId {
    pub const EMPTY: StackId = StackId(0);
}

#[derive(Debug, Clone)]
struct Node {
    parent: StackId,
    frame: RawFrame,
}

/// Prefix tree of frames. Node 0 is the empty stack.
#[derive(Debug, Clone)]
pub struct StackTable {
    nodes: Vec<Node>,
    index: HashMap<(StackId, RawFrame), StackId>,
}

impl Default for StackTable {
    fn default() -> Self {
        Self::new()
    }
}

impl StackTable {
    pub fn new() -> Self {
        StackTable {
            // The root node's frame is never read.
            nodes: vec![Node {
                parent: StackId::EMPTY,
                frame: RawFrame::Unknown(0),
            }],
            index: HashMap::new(),
        }
    }

    /// Interns a stack given leaf first (the order unwinders produce).
    pub fn intern_leaf_first(&mut self, frames: &[RawFrame]) -> StackId {
        let mut id = StackId::EMPTY;
        for frame in frames.iter().rev() {
            id = self.child(id, *frame);
        }
        id
    }

    fn child(&mut self, parent: StackId, frame: RawFrame) -> StackId {
        if let Some(id) = self.index.get(&(parent, frame)) {
            return *id;
        }
        let id = StackId(self.nodes.len() as u32);
        self.nodes.push(Node { parent, frame });
        self.index.insert((parent, frame), id);
        id
    }

    /// Frames of `id`, leaf first.
    pub fn frames(&self, id: StackId) -> StackFrames<'_> {
        StackFrames {
            table: self,
            next: id,
        }
    }

    /// Number of interned nodes, the empty stack included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }
}

/// Iterator over a stack's frames, leaf first.
pub struct StackFrames<'a> {
    table: &'a StackTable,
    next: StackId,
}

impl Iterator for StackFrames<'_> {
    type Item = RawFrame;

    fn next(&mut self) -> Option<RawFrame> {
        if self.next == StackId::EMPTY {
            return None;
        }
        let node = self.table.nodes.get(self.next.0 as usize)?;
        self.next = node.parent;
        Some(node.frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefixes_share_nodes_and_round_trip() {
        let mut t = StackTable::new();
        let a = [
            RawFrame::Kernel(3),
            RawFrame::Kernel(2),
            RawFrame::Kernel(1),
        ];
        let b = [
            RawFrame::Kernel(4),
            RawFrame::Kernel(2),
            RawFrame::Kernel(1),
        ];
        let ia = t.intern_leaf_first(&a);
        let ib = t.intern_leaf_first(&b);
        assert_ne!(ia, ib);
        assert_eq!(t.intern_leaf_first(&a), ia);
        // root + 1 + 2 + 3 + 4: the two stacks share frames 1 and 2.
        assert_eq!(t.len(), 5);
        assert_eq!(t.frames(ia).collect::<Vec<_>>(), a);
        assert_eq!(t.frames(ib).collect::<Vec<_>>(), b);
        assert_eq!(t.frames(StackId::EMPTY).count(), 0);
    }
}
