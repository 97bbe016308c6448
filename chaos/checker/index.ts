// History checkers for the chaos harness. All modules here are pure (no IO, no clocks).
export { describeOp, plainAcknowledgedWrites, type KvVersioned, type Op } from './types.js';
export {
  checkLinearizable,
  DEFAULT_MAX_STATES,
  DEFAULT_TIMEOUT_STEPS,
  type LinearizabilityOptions,
  type LinearizabilityResult,
} from './linearizability.js';
export { checkNoLostWrites, type LostWrite, type LostWritesResult } from './lost-writes.js';
export {
  checkTasks,
  RUNNING_OR_TERMINAL,
  type ProcessInterval,
  type TaskCheckOptions,
  type TaskEvents,
  type TaskObservation,
  type TaskSubmission,
  type TasksResult,
  type TaskViolation,
} from './tasks.js';
export {
  checkRaft,
  checkRaftTraces,
  parseRaftTrace,
  type RaftCheckOptions,
  type RaftCheckResult,
  type RaftEntrySource,
  type RaftLife,
  type RaftRecord,
  type RaftTrace,
  type RaftViolation,
} from './raft.js';
export { renderReport, reportJson, reportText, type CheckResults, type ReportJson, type Verdict } from './report.js';
export { checkNoHealthyWorkerDown, parseDownDeclarations, type DownDeclaration, type WorkersCheckInput, type WorkersResult } from './workers.js';
export { checkAuthAfterHeal, checkWipes, WIPED_REFUSAL, type AuthProbe, type AuthResult, type WipeRecord, type WipeStatus, type WipesResult, type WipeViolation } from './wipes.js';
export {
  availableSlots,
  checkServices,
  describeSample,
  isConverged,
  updateMinimum,
  type ServiceOpRecord,
  type ServiceProcess,
  type ServiceSample,
  type ServicesCheckInput,
  type ServicesCheckOptions,
  type ServicesResult,
  type ServiceTaskSample,
  type ServiceViolation,
  type WorkerDown,
} from './services.js';
export {
  checkMesh,
  describeMeshRequest,
  stallEpisodes,
  type MeshCheckInput,
  type MeshCheckOptions,
  type MeshFaultContext,
  type MeshFreezeSummary,
  type MeshRequest,
  type MeshResult,
  type MeshTableSample,
  type MeshViolation,
  type MeshWorkerDown,
  type ReplicaFreeze,
} from './mesh.js';
