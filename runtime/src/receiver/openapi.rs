//! The receiver's OpenAPI document. It is built when the receiver starts, because what it
//! promises depends on the Entity served (its name, its JSON Schema, its limits) and on the
//! NATS server's max_payload: a document written by hand once could not stay true.

use serde_json::{Value, json};

use super::model::EntityModel;

/// Keys: what `Key::new` accepts, as far as JSON Schema can say it (it counts characters, the
/// receiver bytes, so keys of multi-byte characters are bounded sooner than `maxLength` says).
pub const KEY_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]+$";

/// The document for `model`, on a NATS server whose max_payload is `max_payload` bytes.
pub fn document(model: &EntityModel, max_payload: usize) -> Value {
    let schema = model.schema();
    let entity = model.names().entity();
    let limits = model.limits();
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        })
    };
    let accepted = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}
        })
    };
    let too_large = format!(
        "The body is over {} bytes, or the event (state and changes) over the NATS server's \
         max_payload ({max_payload} bytes) less the event's headers",
        limits.max_body_bytes
    );
    let write_headers = json!([
        {"name": "If-Match", "in": "header", "required": false,
         "description": "Write only if the key is at this version (0: the key must not exist); bare or quoted",
         "schema": {"type": "string", "pattern": "^\"?[0-9]{1,19}\"?$"}},
        {"name": "DreamPipe-Source", "in": "header", "required": false,
         "description": "Who submits (stored in the event's source)", "schema": {"type": "string"}},
        {"name": "DreamPipe-Occurred-At", "in": "header", "required": false,
         "description": "When the change happened at the source (RFC 3339)",
         "schema": {"type": "string", "format": "date-time"}},
        {"name": "X-Correlation-Id", "in": "header", "required": false,
         "description": "Ties the event to the request that caused it", "schema": {"type": "string"}},
    ]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("DreamPipe Event Receiver: {entity}"),
            "description": "The command side of one Entity: submissions are validated against its \
                JSON Schema and appended to its stream only when they carry new information. \
                Errors are RFC 9457 problems. States must not hold NUL (U+0000).",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "paths": {
            "/v1/entities/{entity}/{key}": {
                "parameters": [
                    {"name": "entity", "in": "path", "required": true,
                     "description": "The Entity this receiver serves",
                     "schema": {"type": "string", "enum": [entity]}},
                    {"name": "key", "in": "path", "required": true,
                     "description": "Key of the object: 1 to 512 bytes of UTF-8 without control characters",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": KEY_PATTERN},
                     "example": "c1"},
                ],
                "get": {
                    "summary": "The current state and version of a key",
                    "operationId": "readKey",
                    "responses": {
                        "200": {"description": "The state",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Current"}}}},
                        "400": problem("Invalid key"),
                        "401": problem("No accepted bearer token"),
                        "404": problem("Unknown entity, or a key never written or deleted"),
                        "410": problem("The key was erased and has no life since"),
                        "503": problem("The event store is unavailable; retry"),
                    }
                },
                "put": {
                    "summary": "Store a full snapshot of a key's state",
                    "description": "The state must carry the key of the path at the Entity's key pointer. \
                        A snapshot equal to the stored state (ignored fields aside) appends nothing.",
                    "operationId": "putState",
                    "parameters": write_headers,
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/State"}}}},
                    "responses": {
                        "200": accepted("Updated, or unchanged"),
                        "201": accepted("Created"),
                        "400": problem("Malformed JSON, nesting too deep, invalid key, If-Match or DreamPipe-Occurred-At"),
                        "401": problem("No accepted bearer token"),
                        "404": problem("Unknown entity"),
                        "410": problem("The key was erased and the Entity refuses it afterwards (afterErasure: Refuse)"),
                        "412": problem("If-Match names another version"),
                        "413": problem(&too_large),
                        "422": problem("The state does not match the schema, carries another key, or holds NUL"),
                        "503": problem("The event store is unavailable, or the key too contended; retry"),
                    }
                },
                "patch": {
                    "summary": "Apply a JSON merge patch (RFC 7396) to a key's current state",
                    "operationId": "patchState",
                    "parameters": write_headers,
                    "requestBody": {"required": true, "content": {
                        "application/merge-patch+json": {"schema": {"type": "object"}},
                        "application/json": {"schema": {"type": "object"}},
                    }},
                    "responses": {
                        "200": accepted("Updated, or unchanged"),
                        "400": problem("Malformed JSON, not an object, nesting too deep, invalid key, If-Match or DreamPipe-Occurred-At"),
                        "401": problem("No accepted bearer token"),
                        "404": problem("Unknown entity, or a key with no state to patch"),
                        "410": problem("The key was erased and the Entity refuses it afterwards (afterErasure: Refuse)"),
                        "412": problem("If-Match names another version"),
                        "413": problem(&too_large),
                        "422": problem("The patched state does not match the schema, or holds NUL"),
                        "503": problem("The event store is unavailable, or the key too contended; retry"),
                    }
                },
                "delete": {
                    "summary": "Delete a key; deleting an absent key is unchanged",
                    "operationId": "deleteKey",
                    "parameters": write_headers,
                    "responses": {
                        "200": accepted("Deleted, or unchanged"),
                        "400": problem("Invalid key, If-Match or DreamPipe-Occurred-At"),
                        "401": problem("No accepted bearer token"),
                        "404": problem("Unknown entity"),
                        "410": problem("The key was erased and the Entity refuses it afterwards (afterErasure: Refuse)"),
                        "412": problem("If-Match names another version"),
                        "413": problem(&too_large),
                        "503": problem("The event store is unavailable, or the key too contended; retry"),
                    }
                },
            },
            "/v1/entities/{entity}/{key}/erasure": {
                "post": {
                    "summary": "Erase a key: a tombstone without its data, then its earlier events purged",
                    "description": "The tombstone (a deleted event at the next version) records who asked \
                        and why; every projection drops what came from the key when it meets it. \
                        Repeating the request is safe (ADR 75).",
                    "operationId": "eraseKey",
                    "parameters": [
                        {"name": "entity", "in": "path", "required": true,
                         "schema": {"type": "string", "enum": [entity]}},
                        {"name": "key", "in": "path", "required": true,
                         "schema": {"type": "string", "minLength": 1, "maxLength": 512, "pattern": KEY_PATTERN}},
                    ],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["requestedBy", "reason"], "additionalProperties": false,
                        "properties": {
                            "requestedBy": {"type": "string", "minLength": 1, "description": "Who asks"},
                            "reason": {"type": "string", "minLength": 1, "description": "Why"},
                        }
                    }}}},
                    "responses": {
                        "200": {"description": "Erased: the tombstone is stored and the key's earlier events purged",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Erased"}}}},
                        "400": problem("Malformed JSON, invalid key, or no requestedBy or reason"),
                        "401": problem("No accepted bearer token"),
                        "404": problem("Unknown entity, or a key with no events"),
                        "409": problem("The stream was created denying purge: no key of it can be erased"),
                        "413": problem(&too_large),
                        "503": problem("The event store is unavailable, or the key too contended; retry"),
                    }
                }
            },
            "/v1/entities/{entity}/batch": {
                "post": {
                    "summary": "Submit many items: a result per item, in order",
                    "description": "A JSON array or NDJSON (one item per line). An item that is refused \
                        gets its own problem; the others still go through.",
                    "operationId": "submitBatch",
                    "parameters": [
                        {"name": "entity", "in": "path", "required": true,
                         "schema": {"type": "string", "enum": [entity]}},
                        {"name": "DreamPipe-Source", "in": "header", "required": false,
                         "description": "Who submits (stored in each event's source)", "schema": {"type": "string"}},
                    ],
                    "requestBody": {"required": true, "content": {
                        "application/json": {"schema": {"type": "array", "maxItems": limits.max_batch_items,
                                                        "items": {"description": "A BatchItem; an item that is not one is rejected in its own result"}}},
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    }},
                    "responses": {
                        "200": {"description": "A result per item",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchAnswer"}}}},
                        "400": problem("Malformed JSON"),
                        "401": problem("No accepted bearer token"),
                        "404": problem("Unknown entity"),
                        "413": problem(&format!("The body is over {} bytes, or the batch over {} items", limits.max_body_bytes, limits.max_batch_items)),
                        "415": problem("Neither JSON nor NDJSON"),
                        "503": problem("The receiver is starting; retry"),
                    }
                }
            },
            "/v1/status": {
                "get": {
                    "summary": "The stream's figures",
                    "operationId": "streamStatus",
                    "responses": {
                        "200": {"description": "Events, keys and the newest event",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}},
                        "503": problem("The event store is unavailable; retry"),
                    }
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openApiDocument",
                    "responses": {"200": {"description": "The OpenAPI document",
                                          "content": {"application/json": {"schema": {"type": "object"}}}}}
                }
            },
        },
        "components": {"schemas": {
            "State": schema,
            "Problem": {
                "type": "object", "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"},
                    "status": {"type": "integer"}, "detail": {"type": "string"},
                    "errors": {"type": "array", "items": {"type": "object", "required": ["path", "message"],
                               "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}},
                }
            },
            "Erased": {
                "type": "object", "required": ["result", "key", "version", "sequence", "partition", "purged"],
                "properties": {
                    "result": {"type": "string", "enum": ["erased"]},
                    "key": {"type": "string"},
                    "version": {"type": "integer", "minimum": 1, "description": "The tombstone's version"},
                    "sequence": {"type": "integer", "minimum": 1, "description": "The tombstone's stream sequence"},
                    "partition": {"type": "integer", "minimum": 0, "description": "The key's ordering partition: a projector partition past the tombstone's sequence has scrubbed the key"},
                    "purged": {"type": "integer", "minimum": 0, "description": "Events this request purged"},
                }
            },
            "Accepted": {
                "type": "object", "required": ["result", "key", "version", "sequence"],
                "properties": {
                    "result": {"type": "string", "enum": ["created", "updated", "deleted", "unchanged"]},
                    "key": {"type": "string"},
                    "version": {"type": "integer", "minimum": 0, "description": "0 for a key never written"},
                    "sequence": {"type": "integer", "minimum": 0},
                }
            },
            "Current": {
                "type": "object", "required": ["key", "version", "sequence", "state", "recordedAt"],
                "properties": {
                    "key": {"type": "string"}, "version": {"type": "integer", "minimum": 1},
                    "sequence": {"type": "integer", "minimum": 1}, "state": {"type": "object"},
                    "recordedAt": {"type": "string", "format": "date-time"},
                }
            },
            "BatchItem": {
                "type": "object", "additionalProperties": false,
                "description": "A state to store (its key taken from the state unless given), or a key to delete",
                "properties": {
                    "key": {"type": "string"}, "state": {"type": "object"}, "delete": {"type": "boolean"},
                    "ifMatch": {"type": "integer", "minimum": 0},
                    "occurredAt": {"type": "string", "format": "date-time"},
                    "correlationId": {"type": "string"},
                }
            },
            "BatchAnswer": {
                "type": "object", "required": ["results", "counts"],
                "properties": {
                    "results": {"type": "array", "items": {
                        "type": "object", "required": ["index", "result"],
                        "properties": {
                            "index": {"type": "integer", "minimum": 0}, "key": {"type": "string"},
                            "result": {"type": "string", "enum": ["created", "updated", "deleted", "unchanged", "rejected"]},
                            "version": {"type": "integer"}, "sequence": {"type": "integer"},
                            "problem": {"$ref": "#/components/schemas/Problem"},
                        }
                    }},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                }
            },
            "Status": {
                "type": "object", "required": ["entity", "stream", "events", "keys", "lastSequence"],
                "properties": {
                    "entity": {"type": "string"}, "stream": {"type": "string"},
                    "events": {"type": "integer"}, "keys": {"type": "integer"},
                    "lastSequence": {"type": "integer"},
                    "lastEventTime": {"type": ["string", "null"], "format": "date-time"},
                }
            },
        }}
    })
}
