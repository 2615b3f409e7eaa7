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
    /// The lane's name in spans and stats.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Realtime => "realtime",
            Lane::Batch => "batch",
        }
    }
}
