//! Median and spread of repeated measurements.

/// The median and the range of a set of repeated measurements.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` when there is no finite value (a metric that does not apply to a target).
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return None;
        }
        finite.sort_by(f64::total_cmp);
        let middle = finite.len() / 2;
        let median =
            if finite.len() % 2 == 1 { finite[middle] } else { (finite[middle - 1] + finite[middle]) / 2.0 };
        Some(Spread { median, min: finite[0], max: finite[finite.len() - 1] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_count_takes_the_middle_value() {
        let spread = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(spread, Spread { median: 2.0, min: 1.0, max: 3.0 });
    }

    #[test]
    fn even_count_averages_the_two_middle_values() {
        assert_eq!(Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
    }

    #[test]
    fn non_finite_values_are_ignored_and_none_left_is_none() {
        assert_eq!(Spread::of(&[f64::NAN, 5.0]).unwrap().median, 5.0);
        assert_eq!(Spread::of(&[f64::NAN]), None);
        assert_eq!(Spread::of(&[]), None);
    }
}
