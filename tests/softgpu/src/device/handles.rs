//! Handles: what the C API hands out for streams, events, modules and functions. Each is a
//! number, never a pointer into softgpu, so that a stale, foreign or mistyped handle is
//! `CUDA_ERROR_INVALID_HANDLE` and never undefined behaviour.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The objects of one kind, by handle. A handle is `id << 8 | tag`: the kinds never share one.
#[derive(Debug)]
pub struct Registry<T> {
    tag: usize,
    next: AtomicUsize,
    items: Mutex<HashMap<usize, Arc<T>>>,
}

impl<T> Registry<T> {
    /// An empty registry whose handles end in the byte `tag`.
    pub fn new(tag: u8) -> Self {
        Registry { tag: usize::from(tag), next: AtomicUsize::new(1), items: Mutex::new(HashMap::new()) }
    }

    /// Registers `item`; its new handle.
    pub fn insert(&self, item: Arc<T>) -> usize {
        let handle = self.next.fetch_add(1, Ordering::Relaxed) << 8 | self.tag;
        self.items.lock().unwrap_or_else(PoisonError::into_inner).insert(handle, item);
        handle
    }

    /// The object of `handle`.
    pub fn get(&self, handle: usize) -> Option<Arc<T>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner).get(&handle).cloned()
    }

    /// Unregisters `handle`; its object.
    pub fn remove(&self, handle: usize) -> Option<Arc<T>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner).remove(&handle)
    }

    /// Unregisters every object for which `gone` is true.
    pub fn remove_where(&self, gone: impl Fn(&T) -> bool) {
        self.items.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, item| !gone(item));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_per_kind_and_die_with_their_object() {
        let a = Registry::new(1);
        let b = Registry::new(2);
        let h = a.insert(Arc::new(5));
        let g = b.insert(Arc::new(5));
        assert_ne!(h, g);
        assert_eq!(a.get(g), None);
        assert_eq!(a.get(h).as_deref(), Some(&5));
        a.remove_where(|&v| v == 5);
        assert_eq!(a.get(h), None);
        assert_eq!(a.remove(h), None);
    }
}
