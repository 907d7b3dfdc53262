-- wrk script: POST /subjects/{subject} (look a schema up) with the benchmark schema.
-- The subject and body come from the environment so the harness controls both.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_LOOKUP_BODY")
wrk.headers["Content-Type"] = "application/vnd.schemaregistry.v1+json"
