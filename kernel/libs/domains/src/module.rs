//! Compiled-in modules: a name, the typed interfaces a module exports and the ones it imports.
//!
//! An [`Interface`] is a named, typed, shared object: typically a struct of
//! function pointers or a struct wrapping a trait object, as SPIN's interfaces
//! are. It records the object's `TypeId` and type name so that binding an
//! [`Import`] (which records the type it expects) can be checked.
//!
//! A [`Module`] deliberately says nothing about its provenance; see
//! [`crate::provenance`].

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::{type_name, Any, TypeId};
use core::fmt;

/// A named, typed interface object that a module exports (and a name server can publish).
///
/// Cloning shares the object.
#[derive(Clone)]
pub struct Interface {
    /// The name under which the interface is exported.
    name: String,
    /// The `TypeId` of the object's type.
    type_id: TypeId,
    /// The object's type name, for error messages.
    type_name: &'static str,
    /// The object.
    object: Arc<dyn Any + Send + Sync>,
}

impl Interface {
    /// An interface named `name` whose object is `object`, of type `T`.
    ///
    /// `T` must be a sized type; to export a trait object, wrap it in a struct
    /// (or use `Box<dyn Trait>` as `T`).
    pub fn new<T: Any + Send + Sync>(name: impl Into<String>, object: Arc<T>) -> Interface {
        Interface {
            name: name.into(),
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
            object,
        }
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `TypeId` of the interface object's type.
    pub fn type_id(&self) -> TypeId {
        self.type_id
    }

    /// The interface object's type name.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The interface object as a `T`, or `None` when it has another type.
    pub fn object<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        Arc::clone(&self.object).downcast::<T>().ok()
    }

    /// Whether both interfaces share the same object.
    pub fn same_object(&self, other: &Interface) -> bool {
        Arc::ptr_eq(&self.object, &other.object)
    }
}

impl fmt::Debug for Interface {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Interface")
            .field("name", &self.name)
            .field("type", &self.type_name)
            .finish()
    }
}

/// An interface a module needs: a name and the type it expects the exported object to have.
#[derive(Clone, PartialEq, Eq)]
pub struct Import {
    /// The name of the interface.
    name: String,
    /// The `TypeId` the exported object must have.
    type_id: TypeId,
    /// The expected type's name, for error messages.
    type_name: &'static str,
}

impl Import {
    /// An import of the interface named `name`, expected to hold a `T`.
    pub fn of<T: Any + Send + Sync>(name: impl Into<String>) -> Import {
        Import {
            name: name.into(),
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
        }
    }

    /// The name of the imported interface.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `TypeId` the exported object must have.
    pub fn type_id(&self) -> TypeId {
        self.type_id
    }

    /// The expected type's name.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Whether `interface` has the type this import expects (names are not compared).
    pub fn accepts(&self, interface: &Interface) -> bool {
        self.type_id == interface.type_id
    }
}

impl fmt::Debug for Import {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Import")
            .field("name", &self.name)
            .field("type", &self.type_name)
            .finish()
    }
}

/// Why a module description was rejected.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ModuleError {
    /// Two exports have the same name.
    DuplicateExport {
        /// The module's name.
        module: String,
        /// The repeated export name.
        name: String,
    },
    /// Two imports have the same name.
    DuplicateImport {
        /// The module's name.
        module: String,
        /// The repeated import name.
        name: String,
    },
}

impl fmt::Display for ModuleError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleError::DuplicateExport { module, name } => {
                write!(formatter, "module `{module}` exports `{name}` twice")
            }
            ModuleError::DuplicateImport { module, name } => {
                write!(formatter, "module `{module}` imports `{name}` twice")
            }
        }
    }
}

impl core::error::Error for ModuleError {}

/// The description of a compiled-in module: its name, exports and imports.
///
/// There is no way to say anything about the module's provenance here; the
/// kernel supplies it when it creates the module's domain.
#[derive(Clone, Debug)]
pub struct Module {
    /// The module's name.
    name: String,
    /// The interfaces the module exports, with distinct names.
    exports: Vec<Interface>,
    /// The interfaces the module imports, with distinct names.
    imports: Vec<Import>,
}

impl Module {
    /// A module named `name`; fails when two exports or two imports share a name.
    pub fn new(
        name: impl Into<String>,
        exports: Vec<Interface>,
        imports: Vec<Import>,
    ) -> Result<Module, ModuleError> {
        let name = name.into();
        if let Some(repeated) = first_repeated(exports.iter().map(Interface::name)) {
            return Err(ModuleError::DuplicateExport {
                module: name,
                name: repeated.into(),
            });
        }
        if let Some(repeated) = first_repeated(imports.iter().map(Import::name)) {
            return Err(ModuleError::DuplicateImport {
                module: name,
                name: repeated.into(),
            });
        }
        Ok(Module {
            name,
            exports,
            imports,
        })
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interfaces the module exports.
    pub fn exports(&self) -> &[Interface] {
        &self.exports
    }

    /// The interfaces the module imports.
    pub fn imports(&self) -> &[Import] {
        &self.imports
    }

    /// Splits the module into its name, exports and imports.
    pub(crate) fn into_parts(self) -> (String, Vec<Interface>, Vec<Import>) {
        (self.name, self.exports, self.imports)
    }
}

/// The first name that occurs twice, if any.
fn first_repeated<'a>(names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = alloc::collections::BTreeSet::new();
    names.into_iter().find(|&name| !seen.insert(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn interface_records_its_type() {
        let interface = Interface::new("counter", Arc::new(5_u32));
        assert_eq!(interface.name(), "counter");
        assert_eq!(interface.type_id(), TypeId::of::<u32>());
        assert_eq!(interface.type_name(), "u32");
        assert_eq!(interface.object::<u32>().as_deref(), Some(&5));
        assert!(interface.object::<u64>().is_none());
        assert!(Import::of::<u32>("counter").accepts(&interface));
        assert!(!Import::of::<u64>("counter").accepts(&interface));
    }

    #[test]
    fn module_rejects_duplicate_names() {
        let exports = vec![
            Interface::new("a", Arc::new(1_u8)),
            Interface::new("a", Arc::new(2_u8)),
        ];
        let error = Module::new("m", exports, vec![]).unwrap_err();
        assert_eq!(
            error,
            ModuleError::DuplicateExport {
                module: "m".into(),
                name: "a".into()
            }
        );
        assert_eq!(error.to_string(), "module `m` exports `a` twice");

        let imports = vec![Import::of::<u8>("b"), Import::of::<u16>("b")];
        assert!(matches!(
            Module::new("m", vec![], imports),
            Err(ModuleError::DuplicateImport { .. })
        ));
    }
}
