//! [`Delivery`]: where an acknowledged record landed.

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The partition.
    pub partition: i32,
    /// The record's offset in it.
    pub offset: i64,
}
