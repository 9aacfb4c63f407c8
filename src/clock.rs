//! A wall clock that works in a browser too: `std::time::Instant::now` panics on
//! `wasm32-unknown-unknown`, where the page's `performance.now()` (milliseconds, sub-millisecond
//! resolution where the browser allows) stands in.

/// A point in time; [`Instant::elapsed`] gives the seconds since.
#[derive(Clone, Copy, Debug)]
pub struct Instant(
    #[cfg(not(target_arch = "wasm32"))] std::time::Instant,
    #[cfg(target_arch = "wasm32")] f64,
);

impl Instant {
    pub fn now() -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        return Instant(std::time::Instant::now());
        #[cfg(target_arch = "wasm32")]
        return Instant(performance_now_ms());
    }

    /// Seconds since `self`.
    pub fn elapsed_s(&self) -> f64 {
        #[cfg(not(target_arch = "wasm32"))]
        return self.0.elapsed().as_secs_f64();
        #[cfg(target_arch = "wasm32")]
        return (performance_now_ms() - self.0) * 1e-3;
    }
}

/// `performance.now()` of the page or worker (`Date.now()` where there is none).
#[cfg(target_arch = "wasm32")]
fn performance_now_ms() -> f64 {
    use wasm_bindgen::JsCast;
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &"performance".into())
        .ok()
        .and_then(|p| {
            let now = js_sys::Reflect::get(&p, &"now".into()).ok()?;
            now.dyn_into::<js_sys::Function>()
                .ok()?
                .call0(&p)
                .ok()?
                .as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}
