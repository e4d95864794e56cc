//! Which slot serves which organization: every slot by id, the organizations bound to
//! signed-in accounts (the hot path's index), and those machine identities served lately
//! (bounded: any caller can name an organization). It owns the slots' lifetimes: a slot
//! removed or replaced is marked retired, so that its refresher and its refresh in flight stop
//! without asking here again.

use super::*;

pub(super) struct Registry {
    /// Account or machine-identity slot id → its tokens. Every account in the records has one.
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// Organization → account id of the signed-in accounts.
    index: RwLock<HashMap<String, String>>,
    /// Organization → machine-identity slot id, for `erase` and `status`.
    machine_orgs: Mutex<Recent<String, String>>,
}

impl Registry {
    /// A registry with the organizations of the account records bound.
    pub(super) fn new(records: &Records) -> Registry {
        let index = records
            .orgs
            .iter()
            .map(|(org, b)| (org.clone(), b.account.clone()))
            .collect();
        Registry {
            slots: Mutex::default(),
            index: RwLock::new(index),
            machine_orgs: Mutex::new(Recent::new(MAX_MACHINE_ORGS)),
        }
    }

    /// Adds a slot, retiring the one it replaces.
    pub(super) fn insert(&self, slot: Arc<Slot>) {
        let old = self.slots.lock().unwrap().insert(slot.id.clone(), slot);
        if let Some(old) = old {
            old.retire();
        }
    }

    /// Removes and retires the slot `id`.
    pub(super) fn remove(&self, id: &str) -> Option<Arc<Slot>> {
        let old = self.slots.lock().unwrap().remove(id);
        if let Some(old) = &old {
            old.retire();
        }
        old
    }

    /// Removes and retires `slot` if it is still the one registered under its id, and forgets
    /// the organizations it served as a machine identity.
    pub(super) fn remove_machine(&self, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock().unwrap();
        if slots.get(&slot.id).is_some_and(|c| Arc::ptr_eq(c, slot)) {
            slots.remove(&slot.id);
        }
        drop(slots);
        slot.retire();
        self.machine_orgs
            .lock()
            .unwrap()
            .retain(|id| *id != slot.id);
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots.lock().unwrap().get(id).cloned()
    }

    /// The slot of the account signed in for `org`, else of the machine identity that served
    /// it last.
    pub(super) fn for_org(&self, org: &str) -> Option<Arc<Slot>> {
        let org = org.to_ascii_lowercase();
        let id = self.index.read().unwrap().get(&org).cloned();
        let id = id.or_else(|| self.machine_orgs.lock().unwrap().get(&org).cloned())?;
        self.get(&id)
    }

    /// The machine-identity slots.
    pub(super) fn machines(&self) -> Vec<Arc<Slot>> {
        let slots = self.slots.lock().unwrap();
        slots.values().filter(|s| s.is_machine()).cloned().collect()
    }

    /// Binds `org` to a signed-in account.
    pub(super) fn bind(&self, org: &str, account: &str) {
        self.index
            .write()
            .unwrap()
            .insert(org.to_ascii_lowercase(), account.to_string());
    }

    /// Unbinds organizations (keys as the records hold them).
    pub(super) fn unbind(&self, orgs: &[String]) {
        let mut index = self.index.write().unwrap();
        for o in orgs {
            index.remove(o);
        }
    }

    /// Remembers that machine-identity slot `id` served `org`.
    pub(super) fn served_by_machine(&self, org: &str, id: &str) {
        self.machine_orgs
            .lock()
            .unwrap()
            .put(org.to_ascii_lowercase(), id.to_string());
    }

    /// The organizations machine identities served lately, with the slot id of each.
    pub(super) fn machine_orgs(&self) -> Vec<(String, String)> {
        let machine = self.machine_orgs.lock().unwrap();
        machine
            .entries()
            .map(|(org, id)| (org.clone(), id.clone()))
            .collect()
    }
}
