//! The mutations one object (a key, a batch group, a range) saw, and the question the
//! batch, scan and delete-range checkers ask of them: which one was certainly in effect
//! throughout an interval of the history.
//!
//! Times are history indexes (recording order). A mutation that completed `ok` took effect
//! between its invocation and its completion; one of unknown outcome (`info`, or no
//! completion) may take effect at any time after its invocation, or never; failed ones are
//! left out by the callers.

/// One mutation of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mutation<T> {
    /// History index of the invocation.
    pub(crate) invoke: u64,
    /// History index of the `ok` completion; `None` when the outcome is unknown.
    pub(crate) completion: Option<u64>,
    /// What it wrote.
    pub(crate) effect: T,
}

impl<T> Mutation<T> {
    /// The history indexes of its invocation and completion.
    pub(crate) fn indexes(&self) -> Vec<u64> {
        std::iter::once(self.invoke).chain(self.completion).collect()
    }
}

/// What was certainly in effect throughout an interval.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InEffect<'a, T> {
    /// Nothing was written yet (no mutation was invoked before the interval ended).
    Initial,
    /// This mutation, and no other could have taken effect during the interval.
    Mutation(&'a Mutation<T>),
}

/// The mutations of one object, in invocation order.
#[derive(Debug)]
pub(crate) struct MutationLog<T> {
    mutations: Vec<Mutation<T>>,
    /// `latest_completion[i]`: the latest completion of `mutations[..i]` (`u64::MAX` when one
    /// of them has an unknown outcome, 0 for none).
    latest_completion: Vec<u64>,
}

impl<T> MutationLog<T> {
    pub(crate) fn new(mut mutations: Vec<Mutation<T>>) -> MutationLog<T> {
        mutations.sort_by_key(|mutation| mutation.invoke);
        let mut latest_completion = Vec::with_capacity(mutations.len() + 1);
        let mut latest = 0;
        latest_completion.push(latest);
        for mutation in &mutations {
            latest = latest.max(mutation.completion.unwrap_or(u64::MAX));
            latest_completion.push(latest);
        }
        MutationLog {
            mutations,
            latest_completion,
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Mutation<T>> + '_ {
        self.mutations.iter()
    }

    /// What was certainly in effect from history index `from` to `to`: the last mutation
    /// invoked before `to`, when it completed before `from` and every earlier one completed
    /// before it was invoked (so none can take effect after it); `Initial` when none was
    /// invoked before `to`; `None` when it is not certain.
    pub(crate) fn in_effect(&self, from: u64, to: u64) -> Option<InEffect<'_, T>> {
        let invoked = self.mutations.partition_point(|mutation| mutation.invoke < to);
        let Some(last) = invoked.checked_sub(1).map(|position| &self.mutations[position]) else {
            return Some(InEffect::Initial);
        };
        let completion = last.completion?;
        let earlier_done = self.latest_completion[invoked - 1] < last.invoke;
        (completion < from && earlier_done).then_some(InEffect::Mutation(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mutation(invoke: u64, completion: Option<u64>, effect: u64) -> Mutation<u64> {
        Mutation {
            invoke,
            completion,
            effect,
        }
    }

    /// Only a mutation that completed before the interval, with nothing in flight after it
    /// began, is certainly in effect.
    #[test]
    fn in_effect_needs_one_settled_mutation() {
        let log = MutationLog::new(vec![mutation(1, Some(2), 10), mutation(3, Some(4), 11)]);
        assert_eq!(log.in_effect(0, 1), Some(InEffect::Initial));
        assert_eq!(
            log.in_effect(5, 9),
            Some(InEffect::Mutation(&mutation(3, Some(4), 11)))
        );
        assert_eq!(log.in_effect(4, 9), None, "completed during the interval");
        let overlapping = MutationLog::new(vec![mutation(1, Some(5), 10), mutation(3, Some(4), 11)]);
        assert_eq!(
            overlapping.in_effect(6, 9),
            None,
            "the earlier one may have applied last"
        );
        let unknown = MutationLog::new(vec![mutation(1, None, 10), mutation(3, Some(4), 11)]);
        assert_eq!(
            unknown.in_effect(6, 9),
            None,
            "an unknown outcome may apply at any time"
        );
    }
}
