//! Lanes: the traffic class of a call. Realtime and batch calls have their
//! own connections, budgets and deadlines everywhere, so bulk work cannot
//! queue user-facing work behind it.

/// The traffic class of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// User-facing: tight deadlines, served first.
    Realtime,
    /// Bulk jobs: loose deadlines, served with what is left, shed first.
    Batch,
}

impl Lane {
    /// Both lanes, in [`Lane::index`] order.
    pub const ALL: [Lane; 2] = [Lane::Realtime, Lane::Batch];

    /// The lane's place in per-lane arrays.
    pub fn index(self) -> usize {
        match self {
            Lane::Realtime => 0,
            Lane::Batch => 1,
        }
    }

    /// The lane's name in spans and stats.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Realtime => "realtime",
            Lane::Batch => "batch",
        }
    }
}
