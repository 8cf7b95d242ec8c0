//! Four processes share one inventory object that lives in the manager:
//! `BaseManager.register`.
//!
//! Python:
//! ```python
//! class Inventory:
//!     def __init__(self, stock): self.stock = dict(stock); self.sold = []
//!     def take(self, item, n): ...   # runs in the manager process
//!     def report(self): return sorted(self.stock.items()), len(self.sold)
//!
//! class ShopManager(BaseManager): pass
//! ShopManager.register("Inventory", Inventory)
//!
//! if __name__ == "__main__":
//!     with ShopManager() as m:
//!         inv = m.Inventory({"apple": 100, "pear": 60})
//!         procs = [Process(target=shop, args=(inv, i)) for i in range(4)]
//!         ...
//! ```
//!
//! Here the type needs no registration: `manager.object(Inventory::new, ..)`
//! runs the constructor in the server, and `inv.call(Inventory::take, ..)`
//! runs a method there. The server runs one call at a time, so `take`
//! checks and decrements the stock with no lock, and no sale is lost or
//! doubled.

use std::collections::BTreeMap;

use multiproc::{Managed, Manager, Process};

/// Lives in the manager's process only: no serde needed.
struct Inventory {
    stock: BTreeMap<String, u32>,
    sold: Vec<(u32, String)>,
}

impl Inventory {
    fn new(stock: Vec<(String, u32)>) -> Inventory {
        Inventory {
            stock: stock.into_iter().collect(),
            sold: Vec::new(),
        }
    }

    /// Sells one `item` to `buyer` if any is left.
    fn take(&mut self, (buyer, item): (u32, String)) -> bool {
        match self.stock.get_mut(&item) {
            Some(n) if *n > 0 => {
                *n -= 1;
                self.sold.push((buyer, item));
                true
            }
            _ => false,
        }
    }

    fn report(&self) -> (Vec<(String, u32)>, usize) {
        let stock = self.stock.iter().map(|(k, v)| (k.clone(), *v)).collect();
        (stock, self.sold.len())
    }
}

/// One shopper: tries to buy 30 apples and 20 pears.
fn shop((inv, me): (Managed<Inventory>, u32)) -> u32 {
    let mut bought = 0;
    for i in 0..50 {
        let item = if i % 5 < 3 { "apple" } else { "pear" };
        if inv.call(Inventory::take, (me, item.to_string())).unwrap() {
            bought += 1;
        }
    }
    bought
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let manager = Manager::new()?;
    let stock = vec![("apple".to_string(), 100), ("pear".to_string(), 60)];
    let inv = manager.object(Inventory::new, stock)?;
    let shoppers = (0..4)
        .map(|me| Process::spawn(shop, (inv.clone(), me)))
        .collect::<multiproc::Result<Vec<_>>>()?;
    let mut bought = 0;
    for s in shoppers {
        bought += s.join()?;
    }
    let (stock, sold) = inv.call(Inventory::report, ())?;
    println!("bought by the shoppers: {bought}");
    println!("sold by the inventory: {sold}");
    for (item, left) in &stock {
        println!("{item}: {left} left");
    }
    assert_eq!(bought as usize, sold);
    // 4 shoppers want 120 apples and 80 pears; all 100 apples and 60
    // pears go, none twice.
    assert_eq!(sold, 160);
    assert!(stock.iter().all(|(_, left)| *left == 0));
    Ok(())
}
