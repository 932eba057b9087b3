//! A value to panic with (`std::panic::panic_any`) whose drop panics in turn,
//! unless disarmed: what a sink may panic with, for the tests that the library
//! lets go of such values where no panic may leave.

pub struct PanicsAsItDrops {
    pub sink: &'static str,
    pub armed: bool,
}

impl PanicsAsItDrops {
    /// Panics with an armed one, named `sink`.
    pub fn panic(sink: &'static str) -> ! {
        std::panic::panic_any(PanicsAsItDrops { sink, armed: true })
    }
}

impl Drop for PanicsAsItDrops {
    fn drop(&mut self) {
        if self.armed {
            panic!("the payload of sink {} dropped", self.sink);
        }
    }
}
