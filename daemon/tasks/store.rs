//! Task records in the metadata database.

use super::TaskStore;
use crate::metadata::Metadata;
use async_trait::async_trait;
use ecrl::api::tasks::Task;
use std::sync::Arc;

pub struct MetaTaskStore(pub Arc<Metadata>);

#[async_trait]
impl TaskStore for MetaTaskStore {
    async fn save(&self, task: Task) -> Result<(), String> {
        self.0.save_task(task).await.map_err(|e| e.to_string())
    }

    fn get(&self, id: &str) -> Option<Task> {
        self.0.read().tasks.get(id).cloned()
    }

    fn all(&self) -> Vec<Task> {
        self.0.read().tasks.values().cloned().collect()
    }

    async fn delete(&self, id: &str) -> Result<(), String> {
        self.0
            .delete_task(id.to_string())
            .await
            .map_err(|e| e.to_string())
    }
}
