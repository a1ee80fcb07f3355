//! `spin:key-value`, `spin:variables` and `wasi:keyvalue` (store, atomics) for the guest, over
//! [`Kv`], limited to the stores and variables the component's manifest entry declares.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use wasmtime::component::{Accessor, HasData, Resource, ResourceTable};

use crate::kv::Kv;

mod bindings {
    // Generated code: its items are as public as the bindgen makes them.
    #![allow(unreachable_pub, missing_debug_implementations)]
    wasmtime::component::bindgen!({
        path: "wit",
        world: "edgefront:spin-host/host",
        imports: { default: trappable },
        with: {
            "spin:key-value/key-value.store": super::StoreHandle,
            "wasi:keyvalue/store.bucket": super::StoreHandle,
            "wasi:keyvalue/atomics.cas": super::CasHandle,
        },
    });
}

use bindings::spin::key_value::key_value as spin_kv;
use bindings::spin::variables::variables as spin_vars;
use bindings::wasi::keyvalue::{atomics, store as wasi_kv};

/// An open store: its label.
#[derive(Debug)]
#[allow(unreachable_pub)] // named by the generated bindings
pub struct StoreHandle {
    label: String,
}

/// A compare-and-swap in progress: the value seen when it began.
#[derive(Debug)]
#[allow(unreachable_pub)] // named by the generated bindings
pub struct CasHandle {
    label: String,
    key: String,
    seen: Option<Vec<u8>>,
}

/// What one instance may reach.
#[derive(Debug)]
pub(crate) struct SpinState {
    pub(crate) kv: Arc<Kv>,
    pub(crate) stores: Arc<BTreeSet<String>>,
    pub(crate) variables: Arc<HashMap<String, String>>,
    pub(crate) table: ResourceTable,
}

/// [`HasData`] for the state above.
pub(crate) struct Spin;

impl HasData for Spin {
    type Data<'a> = &'a mut SpinState;
}

/// Adds the interfaces to a linker whose store data hands out a [`SpinState`].
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut SpinState,
) -> wasmtime::Result<()> {
    spin_kv::add_to_linker::<T, Spin>(linker, get)?;
    spin_vars::add_to_linker::<T, Spin>(linker, get)?;
    wasi_kv::add_to_linker::<T, Spin>(linker, get)?;
    atomics::add_to_linker::<T, Spin>(linker, get)?;
    Ok(())
}

impl SpinState {
    fn open(&mut self, label: &str) -> Result<Option<Resource<StoreHandle>>, wasmtime::Error> {
        if !self.stores.contains(label) {
            return Ok(None);
        }
        Ok(Some(self.table.push(StoreHandle {
            label: label.to_owned(),
        })?))
    }

    fn label(&self, store: &Resource<StoreHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(store)?.label.clone())
    }
}

// ---- spin:key-value@3.0.0 ----

impl spin_kv::Host for SpinState {}

impl spin_kv::HostStore for SpinState {
    fn drop(&mut self, store: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

fn spin_other(e: String) -> spin_kv::Error {
    spin_kv::Error::Other(e)
}

impl<T> spin_kv::HostStoreWithStore<T> for Spin {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, spin_kv::Error>> {
        accessor.with(|mut view| {
            // An undeclared store is refused as Spin refuses it.
            Ok(view.get().open(&label)?.ok_or(spin_kv::Error::AccessDenied))
        })
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        accessor.with(|mut view| {
            let state = view.get();
            let label = state.label(&store)?;
            Ok(state.kv.get(&label, &key).map_err(spin_other))
        })
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        accessor.with(|mut view| {
            let state = view.get();
            let label = state.label(&store)?;
            Ok(state.kv.set(&label, &key, &value).map_err(spin_other))
        })
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        accessor.with(|mut view| {
            let state = view.get();
            let label = state.label(&store)?;
            Ok(state.kv.delete(&label, &key).map_err(spin_other))
        })
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        accessor.with(|mut view| {
            let state = view.get();
            let label = state.label(&store)?;
            Ok(state
                .kv
                .get(&label, &key)
                .map(|v| v.is_some())
                .map_err(spin_other))
        })
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<StoreHandle>,
    ) -> wasmtime::Result<(
        wasmtime::component::StreamReader<String>,
        wasmtime::component::FutureReader<Result<(), spin_kv::Error>>,
    )> {
        accessor.with(|mut view| {
            let state = view.get();
            let label = state.label(&store)?;
            let (keys, result) = match state.kv.keys(&label) {
                Ok(keys) => (keys, Ok(())),
                Err(e) => (Vec::new(), Err(spin_other(e))),
            };
            let keys = wasmtime::component::StreamReader::new(&mut view, keys)?;
            let result = wasmtime::component::FutureReader::new(&mut view, async move {
                Ok::<_, wasmtime::Error>(result)
            })?;
            Ok((keys, result))
        })
    }
}

// ---- spin:variables@3.0.0 ----

impl spin_vars::Host for SpinState {}

impl<T> spin_vars::HostWithStore<T> for Spin {
    async fn get(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, spin_vars::Error>> {
        accessor.with(|mut view| {
            Ok(view
                .get()
                .variables
                .get(&name)
                .cloned()
                .ok_or(spin_vars::Error::Undefined(name)))
        })
    }
}

// ---- wasi:keyvalue@0.2.0-draft2 store and atomics ----

fn wasi_other(e: String) -> wasi_kv::Error {
    wasi_kv::Error::Other(e)
}

impl wasi_kv::Host for SpinState {
    fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, wasi_kv::Error>> {
        Ok(self.open(&identifier)?.ok_or(wasi_kv::Error::AccessDenied))
    }
}

impl wasi_kv::HostBucket for SpinState {
    fn get(
        &mut self,
        bucket: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        let label = self.label(&bucket)?;
        Ok(self.kv.get(&label, &key).map_err(wasi_other))
    }

    fn set(
        &mut self,
        bucket: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let label = self.label(&bucket)?;
        Ok(self.kv.set(&label, &key, &value).map_err(wasi_other))
    }

    fn delete(
        &mut self,
        bucket: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let label = self.label(&bucket)?;
        Ok(self.kv.delete(&label, &key).map_err(wasi_other))
    }

    fn exists(
        &mut self,
        bucket: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_kv::Error>> {
        let label = self.label(&bucket)?;
        Ok(self
            .kv
            .get(&label, &key)
            .map(|v| v.is_some())
            .map_err(wasi_other))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<StoreHandle>,
        _cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_kv::KeyResponse, wasi_kv::Error>> {
        let label = self.label(&bucket)?;
        Ok(self
            .kv
            .keys(&label)
            .map(|keys| wasi_kv::KeyResponse { keys, cursor: None })
            .map_err(wasi_other))
    }

    fn drop(&mut self, bucket: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for SpinState {
    fn increment(
        &mut self,
        bucket: Resource<StoreHandle>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wasi_kv::Error>> {
        let label = self.label(&bucket)?;
        loop {
            let seen = match self.kv.get(&label, &key) {
                Ok(v) => v,
                Err(e) => return Ok(Err(wasi_other(e))),
            };
            let current = match seen.as_deref().map(<[u8; 8]>::try_from) {
                None => 0,
                Some(Ok(bytes)) => i64::from_le_bytes(bytes),
                Some(Err(_)) => return Ok(Err(wasi_other(format!("{key} is not a counter")))),
            };
            let next = current.wrapping_add(delta);
            match self
                .kv
                .swap(&label, &key, seen.as_deref(), &next.to_le_bytes())
            {
                Ok(true) => return Ok(Ok(next)),
                Ok(false) => continue,
                Err(e) => return Ok(Err(wasi_other(e))),
            }
        }
    }

    fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.delete(cas)?;
        match self
            .kv
            .swap(&handle.label, &handle.key, handle.seen.as_deref(), &value)
        {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                // A fresh handle on the newer value, for the retry (as the interface asks).
                let seen = match self.kv.get(&handle.label, &handle.key) {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(atomics::CasError::StoreError(wasi_other(e)))),
                };
                let retry = self.table.push(CasHandle { seen, ..handle })?;
                Ok(Err(atomics::CasError::CasFailed(retry)))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(wasi_other(e)))),
        }
    }
}

impl atomics::HostCas for SpinState {
    fn new(
        &mut self,
        bucket: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasHandle>, wasi_kv::Error>> {
        let label = self.label(&bucket)?;
        let seen = match self.kv.get(&label, &key) {
            Ok(v) => v,
            Err(e) => return Ok(Err(wasi_other(e))),
        };
        Ok(Ok(self.table.push(CasHandle { label, key, seen })?))
    }

    fn current(
        &mut self,
        cas: Resource<CasHandle>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        Ok(Ok(self.table.get(&cas)?.seen.clone()))
    }

    fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}
