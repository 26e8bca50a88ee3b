//! The runtime's configuration: DreamPipe resources read from YAML files, the same documents a
//! user applies with kubectl (the operator mounts them from a ConfigMap). Every problem in every
//! document is reported at once, with the file and document it came from.

use std::path::{Path, PathBuf};

use crds::adapter::validate_adapter;
use crds::entity::validate_entity;
use crds::projection::validate_projection;
use crds::{Adapter, Entity, Projection};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// Everything one runtime process was configured with.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub entities: Vec<Entity>,
    pub adapters: Vec<Adapter>,
    pub projections: Vec<Projection>,
}

/// Why the configuration cannot be used; lists every problem found.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Resources {
    /// Reads every `.yaml`/`.yml` file of `paths` (files, or folders read non-recursively in
    /// name order). Resources without a namespace get `default_namespace`.
    pub fn load(paths: &[PathBuf], default_namespace: &str) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut files = Vec::new();
        for path in paths {
            match yaml_files(path) {
                Ok(found) => files.extend(found),
                Err(error) => problems.push(format!("{}: {error}", path.display())),
            }
        }
        let mut resources = Resources::default();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => resources.add_documents(
                    &text,
                    &file.display().to_string(),
                    default_namespace,
                    &mut problems,
                ),
                Err(error) => problems.push(format!("{}: {error}", file.display())),
            }
        }
        resources.check(&mut problems);
        if problems.is_empty() {
            Ok(resources)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Parses YAML text holding one or more documents.
    pub fn parse(text: &str, origin: &str, default_namespace: &str) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut resources = Resources::default();
        resources.add_documents(text, origin, default_namespace, &mut problems);
        resources.check(&mut problems);
        if problems.is_empty() {
            Ok(resources)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn add_documents(
        &mut self,
        text: &str,
        origin: &str,
        default_namespace: &str,
        problems: &mut Vec<String>,
    ) {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let at = format!("{origin} (document {})", index + 1);
            let value = match serde_yaml::Value::deserialize(document) {
                Ok(serde_yaml::Value::Null) => continue,
                Ok(value) => value,
                Err(error) => {
                    problems.push(format!("{at}: not YAML: {error}"));
                    continue;
                }
            };
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned();
            let api_version = value
                .get("apiVersion")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            // A folder a user applies may hold Secrets, Deployments and the like beside the
            // DreamPipe resources; those are Kubernetes' business, not the runtime's.
            let group = api_version.split_once('/').map_or("", |(group, _)| group);
            if group != crds::GROUP {
                tracing::debug!(document = %at, kind, api_version, "not a DreamPipe resource; skipped");
                continue;
            }
            if api_version != format!("{}/{}", crds::GROUP, crds::VERSION) {
                problems.push(format!(
                    "{at}: apiVersion {api_version:?} is not {}/{}",
                    crds::GROUP,
                    crds::VERSION
                ));
                continue;
            }
            if kind == "Erasure" {
                // A request, not a piece of the pipeline: `dreampipe erase -f` carries it out.
                tracing::info!(document = %at, "an Erasure is not run from a configuration; use `dreampipe erase -f`");
                continue;
            }
            let result = match kind.as_str() {
                "Entity" => parse_as(value, default_namespace).map(|r| self.entities.push(r)),
                "Adapter" => parse_as(value, default_namespace).map(|r| self.adapters.push(r)),
                "Projection" => {
                    parse_as(value, default_namespace).map(|r| self.projections.push(r))
                }
                other => Err(format!(
                    "kind {other:?} is not Entity, Adapter or Projection"
                )),
            };
            if let Err(error) = result {
                problems.push(format!("{at}: {error}"));
            }
        }
    }

    /// Validates each resource and the references between them.
    fn check(&self, problems: &mut Vec<String>) {
        let invalid = self
            .entities
            .iter()
            .map(validate_entity)
            .chain(self.adapters.iter().map(validate_adapter))
            .chain(self.projections.iter().map(validate_projection))
            .filter_map(Result::err);
        problems.extend(invalid.map(|error| error.to_string()));
        let references = self
            .adapters
            .iter()
            .map(|a| ("Adapter", &a.metadata, &a.spec.entity))
            .chain(
                self.projections
                    .iter()
                    .map(|p| ("Projection", &p.metadata, &p.spec.entity)),
            );
        for (kind, metadata, entity) in references {
            if self.entity(namespace_of(metadata), entity).is_none() {
                problems.push(format!(
                    "{kind}/{}: spec.entity: no Entity {entity:?} in namespace {:?}",
                    metadata.name.as_deref().unwrap_or_default(),
                    namespace_of(metadata)
                ));
            }
        }
    }

    /// The Entity called `name` in `namespace`.
    pub fn entity(&self, namespace: &str, name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| {
            namespace_of(&e.metadata) == namespace && e.metadata.name.as_deref() == Some(name)
        })
    }
}

/// A resource's namespace (always set after loading).
pub fn namespace_of(metadata: &ObjectMeta) -> &str {
    metadata.namespace.as_deref().unwrap_or("default")
}

/// A resource's name (validation guarantees one).
pub fn name_of(metadata: &ObjectMeta) -> &str {
    metadata.name.as_deref().unwrap_or_default()
}

/// Why a role cannot find the one resource it runs in its configuration.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    #[error("the configuration has no {kind}{}", .name.as_deref().map(|n| format!(" named {n:?}")).unwrap_or_default())]
    Missing {
        kind: &'static str,
        name: Option<String>,
    },
    #[error("the configuration has several {plural} ({names}); choose one with --{flag}")]
    Several {
        plural: &'static str,
        names: String,
        flag: &'static str,
    },
}

/// The one resource a role runs: the one called `name`, or, with no name given, the only one
/// there is.
pub fn pick<'a, R: ConfigResource>(
    resources: &'a [R],
    name: Option<&str>,
) -> Result<&'a R, PickError> {
    let candidates: Vec<&R> = resources
        .iter()
        .filter(|r| name.is_none_or(|name| name_of(r.meta()) == name))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(PickError::Missing {
            kind: R::KIND,
            name: name.map(str::to_owned),
        }),
        several => {
            let names: Vec<&str> = several.iter().map(|r| name_of(r.meta())).collect();
            Err(PickError::Several {
                plural: R::PLURAL,
                names: names.join(", "),
                flag: R::FLAG,
            })
        }
    }
}

fn parse_as<T: serde::de::DeserializeOwned + ConfigResource>(
    value: serde_yaml::Value,
    default_namespace: &str,
) -> Result<T, String> {
    let mut resource: T = serde_yaml::from_value(value).map_err(|error| error.to_string())?;
    let metadata = resource.meta_mut();
    if metadata.namespace.is_none() {
        metadata.namespace = Some(default_namespace.to_owned());
    }
    Ok(resource)
}

/// A kind of resource the configuration holds, and a role runs one of.
pub trait ConfigResource {
    const KIND: &'static str;
    const PLURAL: &'static str;
    /// The flag that names the one to run.
    const FLAG: &'static str;
    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! config_resource {
    ($($kind:ty: $plural:literal, $flag:literal);* $(;)?) => {$(
        impl ConfigResource for $kind {
            const KIND: &'static str = stringify!($kind);
            const PLURAL: &'static str = $plural;
            const FLAG: &'static str = $flag;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    )*};
}
config_resource! {
    Entity: "Entities", "entity";
    Adapter: "Adapters", "adapter";
    Projection: "Projections", "projection";
}

fn yaml_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        std::fs::metadata(path)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTITY: &str = "apiVersion: dreampipe.io/v1alpha1\nkind: Entity\nmetadata: {name: customer}\nspec:\n  key: /id\n  schema: {type: object, required: [id], properties: {id: {type: string}}}\n";

    #[test]
    fn documents_are_read_with_the_default_namespace() {
        let resources = Resources::parse(ENTITY, "entity.yaml", "shop").unwrap();
        assert_eq!(resources.entities.len(), 1);
        assert!(resources.entity("shop", "customer").is_some());
    }

    #[test]
    fn every_problem_names_its_file_and_document() {
        let text = format!(
            "{ENTITY}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n---\napiVersion: dreampipe.io/v1beta9\nkind: Entity\n---\napiVersion: dreampipe.io/v1alpha1\nkind: Projection\nmetadata: {{name: p}}\nspec: {{entity: order, sink: {{nats: {{subject: out}}}}}}\n"
        );
        let error = Resources::parse(&text, "all.yaml", "default").unwrap_err();
        assert_eq!(error.problems.len(), 2, "the Secret is skipped: {error}");
        assert!(
            error.problems[0]
                .starts_with("all.yaml (document 3): apiVersion \"dreampipe.io/v1beta9\""),
            "{error}"
        );
        assert!(
            error.problems[1].contains("Projection/p: spec.entity: no Entity \"order\""),
            "{error}"
        );
    }

    #[test]
    fn a_role_picks_its_resource_by_name_or_as_the_only_one() {
        let two = format!("{ENTITY}---\n{}", ENTITY.replace("customer", "order"));
        let resources = Resources::parse(&two, "entities.yaml", "shop").unwrap();
        let named = pick(&resources.entities, Some("order")).unwrap();
        assert_eq!(name_of(&named.metadata), "order");

        let error = pick(&resources.entities, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the configuration has several Entities (customer, order); choose one with --entity"
        );
        let error = pick(&resources.entities, Some("invoice")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the configuration has no Entity named \"invoice\""
        );

        let one = Resources::parse(ENTITY, "entity.yaml", "shop").unwrap();
        let only = pick(&one.entities, None).unwrap();
        assert_eq!(name_of(&only.metadata), "customer");
        let error = pick(&one.projections, None).unwrap_err();
        assert_eq!(error.to_string(), "the configuration has no Projection");
    }

    #[test]
    fn invalid_specs_are_reported_with_their_paths() {
        let text = ENTITY.replace("key: /id", "key: /nope");
        let error = Resources::parse(&text, "entity.yaml", "default").unwrap_err();
        assert!(
            error.to_string().contains("spec.key: /nope is not defined"),
            "{error}"
        );
    }
}
