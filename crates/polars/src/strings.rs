//! A string column builder that stores each repeated long value once. Log columns repeat a few
//! values millions of times (user agents, locations, pages, levels); Arrow's string views let many
//! rows point at the same bytes, so a row of a repeated value costs its 16-byte view only.
//!
//! Repeats are found with a small direct-mapped cache of recent values (bounded memory, O(1) per
//! value): a column of distinct values pays one hash and one failed comparison per value.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use polars::prelude::*;
use polars_arrow::array::{Utf8ViewArray, View};
use polars_arrow::bitmap::MutableBitmap;
use polars_arrow::datatypes::ArrowDataType;
use polars_buffer::Buffer;

/// Cached recent values per column (a power of two).
const CACHE_SLOTS: usize = 1024;
/// Values up to this length live inside their view; nothing to share.
const INLINE: usize = View::MAX_INLINE_SIZE as usize;
/// A view addresses its buffer with a u32 offset.
const BUFFER_LIMIT: usize = u32::MAX as usize;

pub(crate) struct StringColumn {
    name: PlSmallStr,
    views: Vec<View>,
    /// Present once a null was pushed.
    validity: Option<MutableBitmap>,
    /// Buffers already full.
    completed: Vec<Buffer<u8>>,
    /// The bytes of stored long values, after `completed` (the array's last buffer).
    bytes: Vec<u8>,
    /// Sum of the lengths of all values, repeated ones included.
    total_bytes_len: usize,
    /// Recently stored long values by hash; `length == 0` marks an empty slot.
    cache: Vec<View>,
    hasher: FixedState,
}

impl StringColumn {
    pub(crate) fn new(name: PlSmallStr, capacity: usize) -> Self {
        Self {
            name,
            views: Vec::with_capacity(capacity),
            validity: None,
            completed: Vec::new(),
            bytes: Vec::new(),
            total_bytes_len: 0,
            cache: vec![View::default(); CACHE_SLOTS],
            hasher: FixedState::with_seed(0x5eed),
        }
    }

    pub(crate) fn push(&mut self, value: &str) {
        let value = value.as_bytes();
        self.total_bytes_len += value.len();
        if value.len() <= INLINE {
            self.views.push(View::new_inline(value));
        } else {
            let slot = self.hasher.hash_one(value) as usize & (CACHE_SLOTS - 1);
            let cached = self.cache[slot];
            let view = if cached.length as usize == value.len() && self.stored(cached) == value {
                cached
            } else {
                if self.bytes.len() + value.len() > BUFFER_LIMIT {
                    let full = std::mem::take(&mut self.bytes);
                    self.completed.push(Buffer::from(full));
                }
                let index = self.completed.len() as u32;
                let view = View::new_from_bytes(value, index, self.bytes.len() as u32);
                self.bytes.extend_from_slice(value);
                self.cache[slot] = view;
                view
            };
            self.views.push(view);
        }
        if let Some(validity) = &mut self.validity {
            validity.push(true);
        }
    }

    pub(crate) fn push_null(&mut self) {
        let validity = self.validity.get_or_insert_with(|| {
            let mut bitmap = MutableBitmap::with_capacity(self.views.capacity());
            bitmap.extend_constant(self.views.len(), true);
            bitmap
        });
        validity.push(false);
        self.views.push(View::default());
    }

    fn stored(&self, view: View) -> &[u8] {
        let buffer = match self.completed.get(view.buffer_idx as usize) {
            Some(full) => full.as_slice(),
            None => self.bytes.as_slice(),
        };
        let start = view.offset as usize;
        &buffer[start..start + view.length as usize]
    }

    pub(crate) fn finish(mut self) -> StringChunked {
        self.bytes.shrink_to_fit();
        let mut buffers = self.completed;
        if !self.bytes.is_empty() {
            buffers.push(Buffer::from(self.bytes));
        }
        let total_buffer_len = buffers.iter().map(|b| b.len()).sum();
        // SAFETY: every view was made by `View::new_inline` or `View::new_from_bytes` from a `&str`
        // (valid UTF-8); each long view points at exactly the bytes it was made from, at `offset`
        // in buffer `buffer_idx` (the in-progress buffer becomes that index when it is pushed);
        // `total_bytes_len` is the sum of the lengths of all views.
        let array = unsafe {
            Utf8ViewArray::new_unchecked(
                ArrowDataType::Utf8View,
                self.views.into(),
                buffers.into(),
                self.validity.map(Into::into),
                Some(self.total_bytes_len),
                total_buffer_len,
            )
        };
        StringChunked::with_chunk(self.name, array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_long_values_are_stored_once_and_read_back_exactly() {
        let agent = "\"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) Safari/537.36\"";
        let mut column = StringColumn::new("ua".into(), 4);
        for i in 0..1000 {
            match i % 4 {
                0 => column.push(agent),
                1 => column.push("short"),
                2 => column.push_null(),
                _ => column.push(&format!("a distinct long value number {i}")),
            }
        }
        let ca = column.finish();
        assert_eq!(ca.len(), 1000);
        assert_eq!(ca.null_count(), 250);
        assert_eq!(ca.get(0), Some(agent));
        assert_eq!(ca.get(996), Some(agent));
        assert_eq!(ca.get(1), Some("short"));
        assert_eq!(ca.get(2), None);
        assert_eq!(ca.get(999).unwrap(), "a distinct long value number 999");
        let array = ca.downcast_iter().next().unwrap();
        let distinct: usize = (0..250).map(|i| format!("a distinct long value number {}", 4 * i + 3).len()).sum();
        assert_eq!(array.total_buffer_len(), agent.len() + distinct, "the agent is stored once");
        let expected: Vec<Option<String>> = (0..1000)
            .map(|i| match i % 4 {
                0 => Some(agent.to_string()),
                1 => Some("short".to_string()),
                2 => None,
                _ => Some(format!("a distinct long value number {i}")),
            })
            .collect();
        let got: Vec<Option<String>> = ca.iter().map(|v| v.map(str::to_string)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn values_that_share_a_cache_slot_stay_distinct() {
        let mut column = StringColumn::new("v".into(), 0);
        let values: Vec<String> = (0..5000).map(|i| format!("value-with-some-length-{}", i % 3000)).collect();
        for v in &values {
            column.push(v);
        }
        let ca = column.finish();
        let got: Vec<&str> = ca.iter().map(|v| v.unwrap()).collect();
        assert_eq!(got, values.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
