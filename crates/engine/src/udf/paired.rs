//! `paired_test(x, y)`: the paired comparison of two runs on the same tokens as a SQL aggregate,
//! so a join of two runs by identity gives the paper's main comparison in one query:
//!
//! ```sql
//! SELECT paired_test(a.lid, b.lid) FROM lid a JOIN lid b USING (seq_id, position)
//! WHERE a.step = '3600' AND b.step = '4900'
//! ```
//!
//! It returns a struct of `n`, `mean_diff`, `std_diff`, `d_z`, `t`, `p` and `paper_score`
//! ([`lidscope_kernel::PairedTest`]); pairs with a null or non-finite value are left out. Partial
//! states merge exactly (a cluster or a partitioned plan gives the same figures).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StructArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Fields, Float64Type, UInt64Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{create_udaf, Accumulator, AggregateUDF, Volatility};
use lidscope_kernel::PairedMoments;

/// The struct's fields, in order.
pub const PAIRED_FIELDS: [&str; 7] = ["n", "mean_diff", "std_diff", "d_z", "t", "p", "paper_score"];

fn fields() -> Fields {
    PAIRED_FIELDS.iter().map(|n| Field::new(*n, if *n == "n" { DataType::UInt64 } else { DataType::Float64 }, true)).collect()
}

/// The aggregate, for registering in a session.
pub fn paired_test_udaf() -> AggregateUDF {
    create_udaf(
        "paired_test",
        vec![DataType::Float64, DataType::Float64],
        Arc::new(DataType::Struct(fields())),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(Paired::default()))),
        Arc::new(vec![DataType::UInt64, DataType::Float64, DataType::Float64]),
    )
}

#[derive(Debug, Default)]
struct Paired(PairedMoments);

impl Accumulator for Paired {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (x, y) = (values[0].as_primitive::<Float64Type>(), values[1].as_primitive::<Float64Type>());
        for i in 0..x.len() {
            if x.is_valid(i) && y.is_valid(i) {
                self.0.push(x.value(i), y.value(i));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let t = self.0.test();
        let num = |v: f64| -> ArrayRef { Arc::new(Float64Array::from(vec![Some(v).filter(|v| v.is_finite())])) };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(vec![t.n])),
            num(t.mean_diff),
            num(t.std_diff),
            num(t.d_z),
            num(t.t),
            num(t.p),
            num(t.paper_score),
        ];
        Ok(ScalarValue::Struct(Arc::new(StructArray::try_new(fields(), columns, None)?)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::UInt64(Some(self.0.n)), ScalarValue::Float64(Some(self.0.mean)), ScalarValue::Float64(Some(self.0.m2))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (n, mean, m2) = (states[0].as_primitive::<UInt64Type>(), states[1].as_primitive::<Float64Type>(), states[2].as_primitive::<Float64Type>());
        for i in 0..n.len() {
            if n.is_valid(i) {
                self.0 = self.0.merge(&PairedMoments { n: n.value(i), mean: mean.value(i), m2: m2.value(i) });
            }
        }
        Ok(())
    }
}
