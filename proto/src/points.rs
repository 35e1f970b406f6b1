//! A metric's data points whatever its kind: the one match over the five kinds of
//! [`Data`], so that counting, moving and comparing points is written once.

use std::mem;

use prost::Message;

use crate::metrics::v1::metric::Data;
use crate::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
};

/// Runs `$body` with `$d` bound to the kind's message (`Gauge`, `Sum`, ...), whose
/// `data_points` the body may use: every kind has one, of its own point type.
macro_rules! for_each_kind {
    ($data:expr, $d:ident => $body:expr) => {
        match $data {
            Data::Gauge($d) => $body,
            Data::Sum($d) => $body,
            Data::Histogram($d) => $body,
            Data::ExponentialHistogram($d) => $body,
            Data::Summary($d) => $body,
        }
    };
}

/// Data points taken out of a metric ([`Metric::take_points`]), to be appended to a
/// metric of the same kind ([`Metric::append_points`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Points {
    /// A gauge's or a sum's points.
    Number(Vec<NumberDataPoint>),
    /// A histogram's points.
    Histogram(Vec<HistogramDataPoint>),
    /// An exponential histogram's points.
    ExponentialHistogram(Vec<ExponentialHistogramDataPoint>),
    /// A summary's points.
    Summary(Vec<SummaryDataPoint>),
}

macro_rules! point_type {
    ($variant:ident, $point:ty) => {
        impl From<Vec<$point>> for Points {
            fn from(points: Vec<$point>) -> Self {
                Self::$variant(points)
            }
        }

        impl TryFrom<Points> for Vec<$point> {
            type Error = Points;

            fn try_from(points: Points) -> Result<Self, Points> {
                match points {
                    Points::$variant(p) => Ok(p),
                    other => Err(other),
                }
            }
        }
    };
}

point_type!(Number, NumberDataPoint);
point_type!(Histogram, HistogramDataPoint);
point_type!(ExponentialHistogram, ExponentialHistogramDataPoint);
point_type!(Summary, SummaryDataPoint);

/// Appends `points` to `list` if they are of its type.
fn extend<T>(list: &mut Vec<T>, points: Points) -> Result<(), Points>
where
    Vec<T>: TryFrom<Points, Error = Points>,
{
    list.extend(Vec::<T>::try_from(points)?);
    Ok(())
}

impl Metric {
    /// How many data points the metric holds (0 without data).
    pub fn point_count(&self) -> usize {
        self.data
            .as_ref()
            .map_or(0, |data| for_each_kind!(data, d => d.data_points.len()))
    }

    /// Each data point encoded on its own, in order.
    pub fn encoded_points(&self) -> Vec<Vec<u8>> {
        self.data.as_ref().map_or_else(Vec::new, |data| {
            for_each_kind!(data, d => d.data_points.iter().map(Message::encode_to_vec).collect())
        })
    }

    /// Takes the data points out, leaving everything that identifies the metric: name,
    /// description, unit, metadata, kind, temporality and monotonicity. `None` without data.
    pub fn take_points(&mut self) -> Option<Points> {
        let data = self.data.as_mut()?;
        Some(for_each_kind!(data, d => Points::from(mem::take(&mut d.data_points))))
    }

    /// Appends `points` to the metric's own; gives them back if the metric has no data or
    /// data of another kind.
    pub fn append_points(&mut self, points: Points) -> Result<(), Points> {
        match self.data.as_mut() {
            Some(data) => for_each_kind!(data, d => extend(&mut d.data_points, points)),
            None => Err(points),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::v1::{Gauge, Histogram, Sum};

    fn sum(values: &[i64]) -> Metric {
        Metric {
            name: "m".into(),
            data: Some(Data::Sum(Sum {
                data_points: values
                    .iter()
                    .map(|v| NumberDataPoint {
                        value: Some(crate::metrics::v1::number_data_point::Value::AsInt(*v)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn points_move_between_metrics_of_one_kind_only() {
        let mut a = sum(&[1, 2]);
        let mut b = sum(&[3]);
        assert_eq!((a.point_count(), b.point_count()), (2, 1));
        let points = b.take_points().unwrap();
        assert_eq!(b.point_count(), 0);
        // What is left identifies the metric: the same as another sum's shell.
        let mut shell = sum(&[9, 9, 9]);
        shell.take_points();
        assert_eq!(b, shell);
        a.append_points(points.clone()).unwrap();
        assert_eq!(a, sum(&[1, 2, 3]));

        let mut histogram = Metric {
            data: Some(Data::Histogram(Histogram::default())),
            ..Default::default()
        };
        assert_eq!(histogram.append_points(points.clone()), Err(points.clone()));
        let mut gauge = Metric {
            data: Some(Data::Gauge(Gauge::default())),
            ..Default::default()
        };
        assert_eq!(gauge.append_points(points.clone()), Ok(()));
        assert_eq!(gauge.encoded_points().len(), 1);
        assert_eq!(Metric::default().take_points(), None);
        assert_eq!(Metric::default().point_count(), 0);
    }
}
