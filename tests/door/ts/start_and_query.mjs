// A TypeScript (Node) user of the fabric's front door, with nothing but @temporalio/client:
// dial the door over TLS (trusting the fabric's CA) with the fabric token as Temporal's API key,
// START a WorkloadWorkflow on the fabric's task queue, then QUERY its `status`.
//
// Input (environment): DOOR_ADDRESS (host:port), DOOR_CA_FILE (the door's CA, $FABRIC_HOME/tls/ca.pem),
// DOOR_API_KEY (a fabric token), DOOR_NAMESPACE, DOOR_TASK_QUEUE, DOOR_WORKFLOW_ID and DOOR_SPEC
// (a WorkloadSpec as JSON). Output: one JSON line on stdout, {"started": ..., "status": ...} (exit 0)
// or {"error": {"name", "code", "message", "stage"}} (exit 1).
import { readFileSync } from 'node:fs';
import { Client, Connection } from '@temporalio/client';

// gRPC status names by number, for the error report (`code` of a ServiceError's cause).
const CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
  'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED',
  'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function report(error, stage) {
  let code = error?.code ?? error?.cause?.code;
  if (typeof code === 'number') code = CODES[code] ?? String(code);
  const detail = error?.cause?.details; // the door's (or Temporal's) own words
  const message = String(error?.message ?? error) + (detail ? `: ${detail}` : '');
  return { error: { name: error?.name ?? 'Error', code: code ?? null, message, stage } };
}

async function main() {
  let stage = 'connect';
  try {
    const connection = await Connection.connect({
      address: need('DOOR_ADDRESS'),
      tls: { serverRootCACertificate: readFileSync(need('DOOR_CA_FILE')) },
      apiKey: need('DOOR_API_KEY'), // sent as `authorization: Bearer <token>`
      connectTimeout: '10s',
    });
    const client = new Client({ connection, namespace: need('DOOR_NAMESPACE') });

    stage = 'start';
    const handle = await client.workflow.start('WorkloadWorkflow', {
      taskQueue: need('DOOR_TASK_QUEUE'),
      workflowId: need('DOOR_WORKFLOW_ID'),
      args: [{ spec: JSON.parse(need('DOOR_SPEC')) }], // WorkloadRequest; the default converter writes json/plain
    });

    stage = 'query';
    let status;
    for (let attempt = 1; ; attempt++) {
      try {
        status = await handle.query('status');
        break;
      } catch (error) {
        // The worker may not have run the workflow's first task yet: try again for a little while
        // (a refusal is final).
        const code = error?.code ?? error?.cause?.code;
        if (attempt >= 20 || code === 7 || code === 16) throw error;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    console.log(JSON.stringify({ started: { workflowId: handle.workflowId, runId: handle.firstExecutionRunId },
                                 status }));
    await connection.close();
  } catch (error) {
    console.log(JSON.stringify(report(error, stage)));
    process.exitCode = 1;
  }
}

await main();
