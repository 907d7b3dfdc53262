/*
 * Runs one client scenario against a Kafka endpoint (a broker or the proxy) with the Java
 * client, org.apache.kafka:kafka-clients. The Java counterpart of tests/clients/scenario.py.
 *
 *     java -cp "$KAFKA_LIBS/*" tests/clients/java/Scenario.java --bootstrap HOST:PORT \
 *         --scenario {admin,metadata,roundtrip,compression,idempotent,transactions,
 *                     groups-classic,groups-consumer,groups,
 *                     produce-payloads,produce-transaction,consume-all} \
 *         [--topic-prefix P] [--security-protocol PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL] \
 *         [--ca-file F] [--cert-file F --key-file F] \
 *         [--sasl-mechanism PLAIN|SCRAM-SHA-256|SCRAM-SHA-512|OAUTHBEARER \
 *          --sasl-username U --sasl-password P] \
 *         [--oauth-token-endpoint URL --oauth-client-id ID --oauth-client-secret S \
 *          --oauth-scope S] [--timeout SECONDS] [--log-level off|warn|info|debug] \
 *         [--client java] [--verbose]
 *
 * A single source file without a package, run in source-launch mode (no build step). Source
 * launching compiles the file on every run (4-6 s of CPU on a 2-core machine, more under load);
 * tests/clients/java/scenario.sh compiles it once into a cache and runs the classes instead.
 *
 * The client's own log is off by default; --log-level warn|info|debug (--verbose: debug) sends
 * it to stderr. Logging never touches stdout, which carries only the result line.
 *
 * On success prints one JSON line to stdout, starting {"ok": true, "client": "java",
 * "scenario": ...}, and exits 0. On failure prints "FAIL java/<scenario>: <reason>" to stderr
 * and exits 1; bad arguments exit 2. A watchdog ends the process if the scenario overruns its
 * time limit (--timeout plus 15 s), so a caller never waits forever.
 *
 * Scenarios (topics and groups are named PREFIX-SCENARIO-LABEL-RUNID, as in common.py):
 *   admin            create a 2-partition topic, list it, describe it (leaders, replicas, id),
 *                    delete it and wait until it is gone.
 *   metadata         DescribeCluster's brokers/controller/cluster id, and the coordinator of a
 *                    group a consumer has joined (addresses exactly as the client saw them).
 *   roundtrip        three records with keys, values and headers, read back byte-identical.
 *   compression      common.py's mixed records (null key, empty and null values, binary data,
 *                    repeated header keys) through none, gzip, snappy, lz4 and zstd.
 *   idempotent       600 records over 3 partitions, enable.idempotence, acks=all, 5 requests in
 *                    flight: every ack at the next offset, read back once each in order; the
 *                    broker's DescribeProducers view (one producer id, sequences 0..199) when
 *                    the endpoint offers it.
 *   transactions     commit, abort, commit: read_committed sees the committed records only,
 *                    read_uncommitted all of them; a consume-transform-produce transaction with
 *                    sendOffsetsToTransaction commits the group's offset with the output.
 *   groups-classic   two members split a 4-partition topic, read everything, commit, leave; a
 *   groups-consumer  new member resumes at the committed offsets and reads only what came
 *                    after (group.protocol classic, or consumer = KIP-848).
 * "groups" is an alias of "groups-classic", so the name the Python clients use works too.
 *
 * Scenarios driven by the caller's data, as in scenario.py:
 *   produce-payloads    --payloads FILE [--delivery-timeout-ms MS] [--pause-after N --pause-file F]
 *                       every record of FILE, in order, to its explicit partition (acks=all, the
 *                       file's compression, idempotence, max in flight and linger; retried until
 *                       the delivery timeout, default 60000 ms). FILE is JSON:
 *                         {"topic": "t", "compression": "none|gzip|snappy|lz4|zstd",
 *                          "idempotent": true, "max_in_flight": 5, "linger_ms": 5,
 *                          "records": [{"partition": 0, "key": B64|null, "value": B64|null,
 *                                       "headers": [["k", B64|null], ...]}, ...]}
 *                       Result: "delivered": N, "failed": [{"index": i, "error": "..."}], every
 *                       record accounted for once; a refused record is not a scenario failure.
 *                       --pause-after N --pause-file F: after the first N records, flush, then
 *                       wait until F exists before producing the rest.
 *   produce-transaction --payloads FILE --transactional-id ID (--commit | --abort)
 *                       one transaction with every record of FILE, then commit or abort; a
 *                       failed record or commit aborts it. Result: "committed", "aborted",
 *                       "failed".
 *   consume-all         --topic T --expect N [--isolation read_committed|read_uncommitted]
 *                       every partition of T from the beginning, without a group, until N
 *                       records were read and each partition was read to its end, then 1 s
 *                       more (or the deadline passed). Result: "records": [{"partition",
 *                       "offset", "key", "value", "headers", "timestamp"}] sorted by partition
 *                       and offset, bytes in base64.
 * --timeout defaults to 60 s, 120 s for produce-payloads and produce-transaction.
 */

import java.io.IOException;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Supplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

import javax.security.auth.callback.Callback;
import javax.security.auth.callback.UnsupportedCallbackException;
import javax.security.auth.login.AppConfigurationEntry;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.DeleteTopicsOptions;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.security.auth.AuthenticateCallbackHandler;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerToken;
import org.apache.kafka.common.security.oauthbearer.OAuthBearerTokenCallback;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.AppInfoParser;

public class Scenario {
    static final String CLIENT = "java";
    static final List<String> SCENARIOS = List.of("admin", "compression", "consume-all", "groups",
            "groups-classic", "groups-consumer", "idempotent", "metadata", "produce-payloads",
            "produce-transaction", "roundtrip", "transactions");
    static final List<String> SECURITY_PROTOCOLS = List.of("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL");
    static final List<String> SASL_MECHANISMS = List.of("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER");
    static final List<String> COMPRESSIONS = List.of("none", "gzip", "snappy", "lz4", "zstd");
    static final List<String> ISOLATION_LEVELS = List.of("read_committed", "read_uncommitted");
    // Producing a payload file: a record is retried until this runs out (--delivery-timeout-ms).
    static final int DELIVERY_TIMEOUT_MS = 60_000;
    // consume-all reads on this long after the expected records arrived and every partition
    // was read to its end, so extra records show up (common.py's EXTRA_READ_S).
    static final long EXTRA_READ_MS = 1000;
    static final double DEFAULT_TIMEOUT_S = 60.0;
    // Producing waits for the slowest record's delivery timeout (60 s by default).
    static final double PRODUCE_TIMEOUT_S = 120.0;

    // Group timings, as in common.py (classic protocol only: with group.protocol=consumer
    // the broker owns session timeout and heartbeat interval).
    static final int SESSION_TIMEOUT_MS = 6000;
    static final int HEARTBEAT_INTERVAL_MS = 1000;
    // How long partitions must stay silent before a read is considered complete (common.py).
    static final long QUIET_MS = 2000;
    static final Duration POLL = Duration.ofMillis(200);
    // Extra time past --timeout before the watchdog ends the process.
    static final long WATCHDOG_GRACE_MS = 15_000;
    static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(5);

    static final String USAGE = "usage: java -cp \"$KAFKA_LIBS/*\" Scenario.java --bootstrap HOST:PORT "
            + "--scenario {" + String.join(",", SCENARIOS) + "} [--topic-prefix P] "
            + "[--security-protocol PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL] [--ca-file F] "
            + "[--cert-file F --key-file F] [--sasl-mechanism M --sasl-username U --sasl-password P] "
            + "[--oauth-token-endpoint URL --oauth-client-id ID --oauth-client-secret S --oauth-scope S] "
            + "[--timeout SECONDS] [--log-level off|error|warn|info|debug] [--client java] [--verbose] "
            + "[--payloads FILE] [--delivery-timeout-ms MS] [--pause-after N --pause-file F] "
            + "[--transactional-id ID --commit|--abort] [--topic T --expect N] "
            + "[--isolation read_committed|read_uncommitted]";

    /** A scenario did not observe what it expected; the message is for a person reading test logs. */
    static final class Failure extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Failure(String message) {
            super(message);
        }
    }

    static final class UsageError extends Exception {
        private static final long serialVersionUID = 1L;

        UsageError(String message) {
            super(message);
        }
    }

    // --- options ---------------------------------------------------------------

    static final class Opts {
        String bootstrap;
        String scenario;
        String topicPrefix = "scenario";
        String securityProtocol = "PLAINTEXT";
        String caFile, certFile, keyFile;
        String saslMechanism, saslUsername, saslPassword;
        String oauthTokenEndpoint, oauthClientId, oauthClientSecret, oauthScope;
        double timeoutS = DEFAULT_TIMEOUT_S;
        boolean timeoutGiven;
        boolean verbose;
        // produce-payloads / produce-transaction
        String payloads;
        int deliveryTimeoutMs = DELIVERY_TIMEOUT_MS;
        Integer pauseAfter;
        String pauseFile;
        String transactionalId;
        String transactionEnd; // "commit" or "abort"
        // consume-all
        String readTopic;
        Integer expect;
        String isolation = "read_committed";
        String logLevel = "off";
        String runId = newRunId();

        boolean usesSsl() {
            return securityProtocol.equals("SSL") || securityProtocol.equals("SASL_SSL");
        }

        boolean usesSasl() {
            return securityProtocol.startsWith("SASL_");
        }

        String topic(String label) {
            return topicPrefix + "-" + scenario + "-" + label + "-" + runId;
        }

        String group(String label) {
            return topicPrefix + "-" + scenario + "-" + label + "-" + runId + "-group";
        }

        static Opts parse(String[] argv) throws UsageError {
            Opts o = new Opts();
            for (int i = 0; i < argv.length; i++) {
                String arg = argv[i];
                String value = null;
                int eq = arg.indexOf('=');
                if (arg.startsWith("--") && eq > 0) {
                    value = arg.substring(eq + 1);
                    arg = arg.substring(0, eq);
                }
                if (arg.equals("--verbose")) {
                    o.verbose = true;
                    o.logLevel = "debug";
                    continue;
                }
                if (arg.equals("--commit") || arg.equals("--abort")) {
                    String end = arg.substring(2);
                    if (o.transactionEnd != null && !o.transactionEnd.equals(end))
                        throw new UsageError("--commit and --abort exclude each other");
                    o.transactionEnd = end;
                    continue;
                }
                if (arg.equals("-h") || arg.equals("--help")) {
                    System.out.println(USAGE);
                    System.exit(0);
                }
                if (value == null) {
                    if (i + 1 >= argv.length)
                        throw new UsageError(arg + " needs a value");
                    value = argv[++i];
                }
                switch (arg) {
                    case "--client":
                        if (!value.equals(CLIENT))
                            throw new UsageError("--client must be " + CLIENT + ", not " + value);
                        break;
                    case "--bootstrap": o.bootstrap = value; break;
                    case "--scenario": o.scenario = value; break;
                    case "--topic-prefix": o.topicPrefix = value; break;
                    case "--security-protocol": o.securityProtocol = value.toUpperCase(Locale.ROOT); break;
                    case "--ca-file": o.caFile = value; break;
                    case "--cert-file": o.certFile = value; break;
                    case "--key-file": o.keyFile = value; break;
                    case "--sasl-mechanism": o.saslMechanism = value.toUpperCase(Locale.ROOT); break;
                    case "--sasl-username": o.saslUsername = value; break;
                    case "--sasl-password": o.saslPassword = value; break;
                    case "--oauth-token-endpoint": o.oauthTokenEndpoint = value; break;
                    case "--oauth-client-id": o.oauthClientId = value; break;
                    case "--oauth-client-secret": o.oauthClientSecret = value; break;
                    case "--oauth-scope": o.oauthScope = value; break;
                    case "--log-level":
                        o.logLevel = value.toLowerCase(Locale.ROOT);
                        if (!List.of("off", "error", "warn", "info", "debug", "trace").contains(o.logLevel))
                            throw new UsageError("--log-level must be off, error, warn, info, debug or trace");
                        break;
                    case "--timeout":
                        try {
                            o.timeoutS = Double.parseDouble(value);
                        } catch (NumberFormatException e) {
                            throw new UsageError("--timeout needs a number of seconds, not " + value);
                        }
                        if (!(o.timeoutS > 0))
                            throw new UsageError("--timeout must be positive");
                        o.timeoutGiven = true;
                        break;
                    case "--payloads": o.payloads = value; break;
                    case "--delivery-timeout-ms":
                        o.deliveryTimeoutMs = intArg(arg, value);
                        if (o.deliveryTimeoutMs <= 0)
                            throw new UsageError("--delivery-timeout-ms must be positive");
                        break;
                    case "--pause-after":
                        o.pauseAfter = intArg(arg, value);
                        if (o.pauseAfter < 0)
                            throw new UsageError("--pause-after must be >= 0");
                        break;
                    case "--pause-file": o.pauseFile = value; break;
                    case "--transactional-id": o.transactionalId = value; break;
                    case "--topic": o.readTopic = value; break;
                    case "--expect":
                        o.expect = intArg(arg, value);
                        if (o.expect < 0)
                            throw new UsageError("--expect must be >= 0");
                        break;
                    case "--isolation":
                        if (!ISOLATION_LEVELS.contains(value))
                            throw new UsageError("--isolation must be one of " + ISOLATION_LEVELS);
                        o.isolation = value;
                        break;
                    default:
                        throw new UsageError("unknown option " + arg);
                }
            }
            if (o.bootstrap == null)
                throw new UsageError("--bootstrap is required");
            if (o.scenario == null)
                throw new UsageError("--scenario is required");
            if (!SCENARIOS.contains(o.scenario))
                throw new UsageError("unknown scenario " + o.scenario + "; one of " + SCENARIOS);
            if (!SECURITY_PROTOCOLS.contains(o.securityProtocol))
                throw new UsageError("--security-protocol must be one of " + SECURITY_PROTOCOLS);
            if (o.saslMechanism != null && !SASL_MECHANISMS.contains(o.saslMechanism))
                throw new UsageError("--sasl-mechanism must be one of " + SASL_MECHANISMS);
            if (o.usesSasl()) {
                if (o.saslMechanism == null)
                    throw new UsageError("--security-protocol " + o.securityProtocol + " needs --sasl-mechanism");
                if (o.saslMechanism.equals("OAUTHBEARER")) {
                    if (o.oauthTokenEndpoint == null)
                        throw new UsageError("OAUTHBEARER needs --oauth-token-endpoint");
                } else if (o.saslUsername == null || o.saslPassword == null) {
                    throw new UsageError(o.saslMechanism + " needs --sasl-username and --sasl-password");
                }
            }
            if (o.keyFile != null && o.certFile == null)
                throw new UsageError("--key-file needs --cert-file");
            boolean producing = o.scenario.equals("produce-payloads") || o.scenario.equals("produce-transaction");
            if (producing && o.payloads == null)
                throw new UsageError(o.scenario + " needs --payloads FILE");
            if (o.scenario.equals("produce-transaction")) {
                if (o.transactionalId == null)
                    throw new UsageError("produce-transaction needs --transactional-id");
                if (o.transactionEnd == null)
                    throw new UsageError("produce-transaction needs --commit or --abort");
            }
            if ((o.pauseAfter == null) != (o.pauseFile == null))
                throw new UsageError("--pause-after and --pause-file go together");
            if (o.scenario.equals("consume-all")) {
                if (o.readTopic == null)
                    throw new UsageError("consume-all needs --topic");
                if (o.expect == null)
                    throw new UsageError("consume-all needs --expect N");
            }
            if (!o.timeoutGiven && producing)
                o.timeoutS = PRODUCE_TIMEOUT_S;
            return o;
        }

        static int intArg(String arg, String value) throws UsageError {
            try {
                return Integer.parseInt(value);
            } catch (NumberFormatException e) {
                throw new UsageError(arg + " needs a whole number, not " + value);
            }
        }
    }

    static String newRunId() {
        String alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        SecureRandom r = new SecureRandom();
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < 10; i++)
            b.append(alphabet.charAt(r.nextInt(alphabet.length())));
        return b.toString();
    }

    // --- main ------------------------------------------------------------------

    public static void main(String[] argv) {
        Opts o;
        try {
            o = Opts.parse(argv);
        } catch (UsageError e) {
            System.err.println(USAGE);
            System.err.println("error: " + e.getMessage());
            System.err.flush();
            Runtime.getRuntime().halt(2);
            return;
        }
        configureLogging(o.logLevel);
        startWatchdog(o);
        long started = System.nanoTime();
        int code;
        try {
            Map<String, Object> details = run(o);
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("ok", true);
            out.put("client", CLIENT);
            out.put("scenario", o.scenario);
            Map<String, Object> rest = new TreeMap<>(details);
            rest.put("bootstrap", o.bootstrap);
            rest.put("security_protocol", o.securityProtocol);
            rest.put("elapsed_s", seconds(System.nanoTime() - started));
            out.putAll(rest);
            System.out.println(Json.write(out));
            code = 0;
        } catch (Failure f) {
            System.err.println("FAIL " + CLIENT + "/" + o.scenario + ": " + f.getMessage());
            if (o.logLevel.equals("off"))
                System.err.println("  (the client's own log is off; --log-level warn shows it)");
            code = 1;
        } catch (Throwable t) {
            System.err.println("FAIL " + CLIENT + "/" + o.scenario + ": unexpected " + explain(t));
            StackTraceElement[] st = t.getStackTrace();
            for (int i = 0; i < Math.min(5, st.length); i++)
                System.err.println("    at " + st[i]);
            if (o.verbose)
                t.printStackTrace();
            code = 1;
        }
        System.out.flush();
        System.err.flush();
        // Client threads may linger after a failure; never let them keep the process alive.
        Runtime.getRuntime().halt(code);
    }

    static volatile Deadline RUN_DEADLINE;

    static Map<String, Object> run(Opts o) {
        Deadline d = new Deadline(o.timeoutS);
        RUN_DEADLINE = d;
        OAuthLogin.OPTS = o;
        Map<String, Object> details;
        switch (o.scenario) {
            case "admin": details = scenarioAdmin(o, d); break;
            case "metadata": details = scenarioMetadata(o, d); break;
            case "roundtrip": details = scenarioRoundtrip(o, d); break;
            case "compression": details = scenarioCompression(o, d); break;
            case "idempotent": details = scenarioIdempotent(o, d); break;
            case "transactions": details = scenarioTransactions(o, d); break;
            case "produce-payloads": details = scenarioProducePayloads(o, d); break;
            case "produce-transaction": details = scenarioProduceTransaction(o, d); break;
            case "consume-all": details = scenarioConsumeAll(o, d); break;
            case "groups":
            case "groups-classic": details = scenarioGroups(o, d, "classic"); break;
            case "groups-consumer": details = scenarioGroups(o, d, "consumer"); break;
            default: throw new Failure("unknown scenario " + o.scenario);
        }
        details.put("library", "kafka-clients " + AppInfoParser.getVersion());
        return details;
    }

    static void startWatchdog(Opts o) {
        long limitMs = (long) (o.timeoutS * 1000) + WATCHDOG_GRACE_MS;
        Thread t = new Thread(() -> {
            try {
                Thread.sleep(limitMs);
            } catch (InterruptedException e) {
                return;
            }
            System.err.printf("FAIL %s/%s: no result after %.0fs; aborting%n", CLIENT, o.scenario, limitMs / 1000.0);
            System.err.flush();
            Runtime.getRuntime().halt(1);
        }, "scenario-watchdog");
        t.setDaemon(true);
        t.start();
    }

    /**
     * Keeps the client library's logging quiet and off stdout. The client logs through SLF4J.
     * When the Log4j 2 API is on the class path (the Kafka distribution's libs bind SLF4J to
     * it), it is pointed at its own SimpleLogger, which writes to stderr at --log-level (off by
     * default; --verbose: debug) and never starts log4j-core, whose start-up costs about a
     * second and whose default configuration prints errors to stdout. An SLF4J 2 API without a
     * provider gets its no-op provider; an SLF4J 1.7 API without a binding still prints its
     * three-line notice to stderr.
     */
    static void configureLogging(String level) {
        ClassLoader cl = Scenario.class.getClassLoader();
        if (System.getProperty("log4j2.configurationFile") != null
                || System.getProperty("log4j2.loggerContextFactory") != null
                || System.getProperty("slf4j.provider") != null)
            return; // the caller chose
        boolean log4jApi = present(cl, "org.apache.logging.log4j.simple.SimpleLoggerContextFactory");
        boolean slf4j2 = present(cl, "org.slf4j.spi.SLF4JServiceProvider");
        boolean slf4j2ToLog4j = present(cl, "org.apache.logging.slf4j.SLF4JServiceProvider");
        if (log4jApi) {
            System.setProperty("log4j2.loggerContextFactory", "org.apache.logging.log4j.simple.SimpleLoggerContextFactory");
            System.setProperty("org.apache.logging.log4j.simplelog.level", level.toUpperCase(Locale.ROOT));
            System.setProperty("org.apache.logging.log4j.simplelog.logFile", "system.err");
            System.setProperty("org.apache.logging.log4j.simplelog.showdatetime", "true");
            System.setProperty("org.apache.logging.log4j.simplelog.dateTimeFormat", "HH:mm:ss.SSS");
            System.setProperty("org.apache.logging.log4j.simplelog.StatusLogger.level", "ERROR");
        }
        if (slf4j2 && !(slf4j2ToLog4j && log4jApi)) {
            System.setProperty("slf4j.internal.verbosity", "WARN");
            System.setProperty("slf4j.provider", "org.slf4j.helpers.NOP_FallbackServiceProvider");
        }
    }

    static boolean present(ClassLoader cl, String name) {
        try {
            Class.forName(name, false, cl);
            return true;
        } catch (ClassNotFoundException | LinkageError e) {
            return false;
        }
    }

    // --- timing -----------------------------------------------------------------

    static final class Deadline {
        final long start = System.nanoTime();
        final long end;

        Deadline(double seconds) {
            end = start + (long) (seconds * 1e9);
        }

        long remainingMs() {
            return Math.max(0, (end - System.nanoTime()) / 1_000_000);
        }

        boolean expired() {
            return System.nanoTime() >= end;
        }
    }

    static double seconds(long nanos) {
        return BigDecimal.valueOf(nanos / 1e9).setScale(3, RoundingMode.HALF_UP).doubleValue();
    }

    static double since(long startNanos) {
        return seconds(System.nanoTime() - startNanos);
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new Failure("interrupted");
        }
    }

    /** Polls `check` until it returns true; returns the seconds it took. */
    static double waitUntil(Supplier<Boolean> check, Deadline d, String what) {
        long started = System.nanoTime();
        Throwable last = null;
        while (true) {
            try {
                if (check.get())
                    return since(started);
                last = null;
            } catch (Failure f) {
                throw f;
            } catch (Exception e) { // client errors while the cluster settles
                last = e;
            }
            if (d.expired())
                throw new Failure(String.format("timed out after %.1fs waiting for %s%s%s", since(started), what,
                        last == null ? "" : " (last error: " + explain(last) + ")", bootstrapHint()));
            sleep(Math.min(250, Math.max(10, d.remainingMs())));
        }
    }

    /** Waits for a client future until the deadline; failures name `what` and the cause. */
    static <T> T await(Future<T> f, Deadline d, String what) {
        try {
            return f.get(Math.max(1, d.remainingMs()), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            throw new Failure(what + ": no answer before the deadline" + bootstrapHint());
        } catch (ExecutionException e) {
            throw new Failure(what + " failed: " + explain(e.getCause()));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new Failure(what + ": interrupted");
        }
    }

    /**
     * With the client's log off, a timeout says little: name a bootstrap address that cannot
     * even be connected to.
     */
    static String bootstrapHint() {
        Opts o = OAuthLogin.OPTS;
        if (o == null)
            return "";
        List<String> bad = new ArrayList<>();
        for (String hp : o.bootstrap.split(",")) {
            hp = hp.trim();
            int colon = hp.lastIndexOf(':');
            if (colon <= 0)
                continue;
            String host = hp.substring(0, colon).replace("[", "").replace("]", "");
            try (java.net.Socket sock = new java.net.Socket()) {
                sock.connect(new java.net.InetSocketAddress(host, Integer.parseInt(hp.substring(colon + 1))), 1000);
            } catch (IOException | RuntimeException e) {
                bad.add(hp + " (" + explain(e) + ")");
            }
        }
        return bad.isEmpty() ? "" : "; cannot connect to bootstrap " + String.join(", ", bad);
    }

    /** Like await, but throws the client's own exception (for use inside waitUntil). */
    static <T> T get(Future<T> f, Deadline d) throws Exception {
        try {
            return f.get(Math.max(1, Math.min(10_000, d.remainingMs())), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            throw c instanceof Exception ? (Exception) c : e;
        }
    }

    /** "ExceptionClass: message; caused by ..." for a person reading logs. */
    static String explain(Throwable t) {
        StringBuilder b = new StringBuilder();
        Set<Throwable> seen = new HashSet<>();
        int n = 0;
        for (Throwable c = t; c != null && seen.add(c) && n < 4; c = c.getCause()) {
            String m = c.getMessage();
            String name = c.getClass().getSimpleName();
            // Wrappers often repeat their cause's text: name each thing once.
            if (n > 0 && (m == null ? b.indexOf(name) >= 0 : b.indexOf(m) >= 0))
                continue;
            if (n > 0)
                b.append("; caused by ");
            b.append(name);
            if (m != null)
                b.append(": ").append(m);
            n++;
        }
        return b.toString();
    }

    // --- records ----------------------------------------------------------------

    static final class Hdr {
        final String key;
        final byte[] value;

        Hdr(String key, byte[] value) {
            this.key = key;
            this.value = value;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Hdr && key.equals(((Hdr) o).key) && Arrays.equals(value, ((Hdr) o).value);
        }

        @Override
        public int hashCode() {
            return key.hashCode() * 31 + Arrays.hashCode(value);
        }
    }

    static final class Rec {
        final byte[] key;
        final byte[] value;
        final List<Hdr> headers;

        Rec(byte[] key, byte[] value, List<Hdr> headers) {
            this.key = key;
            this.value = value;
            this.headers = List.copyOf(headers);
        }

        static Rec of(ConsumerRecord<byte[], byte[]> r) {
            List<Hdr> hs = new ArrayList<>();
            for (Header h : r.headers())
                hs.add(new Hdr(h.key(), h.value()));
            return new Rec(r.key(), r.value(), hs);
        }

        ProducerRecord<byte[], byte[]> toProducerRecord(String topic, Integer partition) {
            List<Header> hs = new ArrayList<>();
            for (Hdr h : headers)
                hs.add(new RecordHeader(h.key, h.value));
            return new ProducerRecord<>(topic, partition, null, key, value, hs);
        }

        @Override
        public boolean equals(Object o) {
            if (!(o instanceof Rec))
                return false;
            Rec r = (Rec) o;
            return Arrays.equals(key, r.key) && Arrays.equals(value, r.value) && headers.equals(r.headers);
        }

        @Override
        public int hashCode() {
            return Objects.hash(Arrays.hashCode(key), Arrays.hashCode(value), headers);
        }

        String describe() {
            return "key=" + shortRepr(key) + " value=" + shortRepr(value) + " headers=["
                    + headers.stream().map(h -> h.key + "=" + shortRepr(h.value)).collect(Collectors.joining(", "))
                    + "]";
        }
    }

    /** A consumed record with where it was read from. */
    static final class Got {
        final TopicPartition tp;
        final long offset;
        final Rec rec;

        Got(ConsumerRecord<byte[], byte[]> r) {
            tp = new TopicPartition(r.topic(), r.partition());
            offset = r.offset();
            rec = Rec.of(r);
        }
    }

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** Python's repr() of a bytes value, shortened like common.py's _short. */
    static String shortRepr(byte[] v) {
        if (v == null)
            return "null";
        StringBuilder r = new StringBuilder("b'");
        for (byte x : v) {
            int c = x & 0xff;
            if (c == '\\' || c == '\'')
                r.append('\\').append((char) c);
            else if (c == '\t')
                r.append("\\t");
            else if (c == '\n')
                r.append("\\n");
            else if (c == '\r')
                r.append("\\r");
            else if (c >= 0x20 && c < 0x7f)
                r.append((char) c);
            else
                r.append(String.format("\\x%02x", c));
        }
        r.append('\'');
        return r.length() <= 40 ? r.toString() : r.substring(0, 40) + "...(" + v.length + " bytes)";
    }

    static List<Hdr> hdrs(Object... kv) {
        List<Hdr> out = new ArrayList<>();
        for (int i = 0; i < kv.length; i += 2)
            out.add(new Hdr((String) kv[i], (byte[]) kv[i + 1]));
        return out;
    }

    /**
     * The records of common.py's mixed_records(): a null key, an empty key, an empty value, a
     * null value (tombstone), binary keys and values, a large compressible value, records
     * without headers, an empty header value and repeated header keys whose order must survive.
     */
    static List<Rec> mixedRecords(int count) {
        List<Rec> out = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            byte[] key = b("key-" + i);
            byte[] tail = new byte[32];
            for (int j = 0; j < 32; j++)
                tail[j] = (byte) ((i * 31 + j) % 256);
            byte[] value = concat(b("value-" + i + "-"), tail);
            List<Hdr> headers = hdrs("trace", b("trace-first-" + i), "trace", b("trace-second-" + i),
                    "seq", b(Integer.toString(i)));
            switch (i) {
                case 0: key = null; break;
                case 1: value = new byte[0]; break;
                case 2: {
                    key = new byte[0];
                    value = new byte[256];
                    for (int j = 0; j < 256; j++)
                        value[j] = (byte) j;
                    break;
                }
                case 3:
                    key = concat(new byte[] {0, (byte) 0xff, 0}, b("binary"), new byte[] {1});
                    headers = hdrs("trace", new byte[] {0, 1, 2}, "span", new byte[0], "trace", new byte[] {(byte) 0xff});
                    break;
                case 4: value = b("compressible-payload;".repeat(500)); break;
                case 5: headers = List.of(); break;
                case 6: headers = hdrs("a", b("1"), "b", b("2"), "a", b("3"), "b", b("4"), "a", b("5")); break;
                case 7: value = null; break; // tombstone
                default: break;
            }
            out.add(new Rec(key, value, headers));
        }
        return out;
    }

    static List<Rec> numberedRecords(int first, int last, String prefix) {
        List<Rec> out = new ArrayList<>();
        for (int i = first; i <= last; i++)
            out.add(new Rec(b(prefix + "-key-" + i), b(prefix + "-" + i), hdrs("seq", b(Integer.toString(i)))));
        return out;
    }

    static byte[] concat(byte[]... parts) {
        int n = 0;
        for (byte[] p : parts)
            n += p.length;
        byte[] out = new byte[n];
        int at = 0;
        for (byte[] p : parts) {
            System.arraycopy(p, 0, out, at, p.length);
            at += p.length;
        }
        return out;
    }

    static void assertSameRecords(List<Rec> expected, List<Rec> got, String what) {
        for (int i = 0; i < Math.min(expected.size(), got.size()); i++) {
            if (!expected.get(i).equals(got.get(i)))
                throw new Failure(String.format("%s: record %d differs%n  expected: %s%n  received: %s", what, i,
                        expected.get(i).describe(), got.get(i).describe()));
        }
        if (expected.size() != got.size())
            throw new Failure(String.format("%s: expected %d records, received %d%s", what, expected.size(), got.size(),
                    got.size() > expected.size() ? "; first unexpected: " + got.get(expected.size()).describe() : ""));
    }

    static List<Rec> recs(List<Got> got) {
        return got.stream().map(g -> g.rec).collect(Collectors.toList());
    }

    static List<Long> offsets(List<Got> got) {
        return got.stream().map(g -> g.offset).collect(Collectors.toList());
    }

    /** Offsets must be first, first+1, ...: nothing lost, repeated or reordered. */
    static void assertContiguous(List<Got> got, long first, String what) {
        for (int i = 0; i < got.size(); i++) {
            if (got.get(i).offset != first + i)
                throw new Failure(String.format("%s: record %d has offset %d, expected %d (offsets %s)", what, i,
                        got.get(i).offset, first + i, abbreviate(offsets(got))));
        }
    }

    static String abbreviate(List<?> l) {
        return l.size() <= 12 ? l.toString()
                : l.subList(0, 6) + "...(" + l.size() + " in all)..." + l.subList(l.size() - 3, l.size());
    }

    /**
     * Collects records until `expected` arrived and the source went quiet (as in common.py): reading
     * on for a quiet period after the expected count catches duplicates and extras.
     */
    static final class QuietReader {
        final int expected;
        final Deadline d;
        final String what;
        int count;
        long lastChange = System.nanoTime();

        QuietReader(int expected, Deadline d, String what) {
            this.expected = expected;
            this.d = d;
            this.what = what;
        }

        void add(int n) {
            if (n > 0) {
                count += n;
                lastChange = System.nanoTime();
            }
        }

        boolean done() {
            if (count >= expected && System.nanoTime() - lastChange >= QUIET_MS * 1_000_000)
                return true;
            if (d.expired()) {
                if (count >= expected)
                    return true;
                throw new Failure(String.format("%s: received %d of %d records before the deadline", what, count,
                        expected));
            }
            return false;
        }
    }

    // --- clients ----------------------------------------------------------------

    static Map<String, Object> common(Opts o) {
        Map<String, Object> c = new HashMap<>();
        c.put("bootstrap.servers", o.bootstrap);
        c.put("client.id", "scenario-" + o.scenario);
        c.put("security.protocol", o.securityProtocol);
        c.put("request.timeout.ms", 15000);
        c.put("socket.connection.setup.timeout.max.ms", 10000);
        if (o.usesSsl()) {
            if (o.caFile != null) {
                c.put("ssl.truststore.type", "PEM");
                c.put("ssl.truststore.location", o.caFile);
            }
            if (o.certFile != null) {
                c.put("ssl.keystore.type", "PEM");
                c.put("ssl.keystore.certificate.chain", Pem.certificates(o.certFile));
                c.put("ssl.keystore.key", Pem.pkcs8PrivateKey(o.keyFile != null ? o.keyFile : o.certFile));
            }
        }
        if (o.usesSasl()) {
            c.put("sasl.mechanism", o.saslMechanism);
            switch (o.saslMechanism) {
                case "PLAIN":
                    c.put("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required "
                            + "username=\"" + jaasEscape(o.saslUsername) + "\" password=\"" + jaasEscape(o.saslPassword)
                            + "\";");
                    break;
                case "SCRAM-SHA-256":
                case "SCRAM-SHA-512":
                    c.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required "
                            + "username=\"" + jaasEscape(o.saslUsername) + "\" password=\"" + jaasEscape(o.saslPassword)
                            + "\";");
                    break;
                case "OAUTHBEARER":
                    // Token from the same client_credentials fetch the Python clients use; Kafka's
                    // built-in OIDC login handler insists on a "sub" claim and an allow-listed URL.
                    c.put("sasl.jaas.config",
                            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;");
                    c.put("sasl.login.callback.handler.class", OAuthLogin.class);
                    break;
                default:
                    throw new Failure("unsupported SASL mechanism " + o.saslMechanism);
            }
        }
        return c;
    }

    static String jaasEscape(String s) {
        return s.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    static Admin admin(Opts o) {
        Map<String, Object> c = common(o);
        c.put("client.id", "scenario-" + o.scenario + "-admin");
        c.put("default.api.timeout.ms", 30000);
        try {
            return Admin.create(c);
        } catch (KafkaException e) {
            throw new Failure("creating admin client failed: " + explain(e));
        }
    }

    static KafkaProducer<byte[], byte[]> producer(Opts o, Object... extra) {
        Map<String, Object> c = common(o);
        c.put("acks", "all");
        c.put("linger.ms", 5);
        c.put("delivery.timeout.ms", 30000);
        c.put("max.block.ms", 15000);
        putAll(c, extra);
        try {
            return new KafkaProducer<>(c, new ByteArraySerializer(), new ByteArraySerializer());
        } catch (KafkaException e) {
            throw new Failure("creating producer failed: " + explain(e));
        }
    }

    /** A consumer; with a group id and the classic protocol it gets common.py's group timings. */
    static KafkaConsumer<byte[], byte[]> consumer(Opts o, String group, Object... extra) {
        Map<String, Object> c = common(o);
        c.put("auto.offset.reset", "earliest");
        c.put("enable.auto.commit", false);
        c.put("default.api.timeout.ms", 30000);
        if (group != null)
            c.put("group.id", group);
        putAll(c, extra);
        if (group != null && !"consumer".equals(c.get("group.protocol"))) {
            c.putIfAbsent("session.timeout.ms", SESSION_TIMEOUT_MS);
            c.putIfAbsent("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS);
            c.putIfAbsent("max.poll.interval.ms", 30000);
        }
        try {
            return new KafkaConsumer<>(c, new ByteArrayDeserializer(), new ByteArrayDeserializer());
        } catch (KafkaException e) {
            throw new Failure("creating consumer failed: " + explain(e));
        }
    }

    static void putAll(Map<String, Object> c, Object... kv) {
        for (int i = 0; i < kv.length; i += 2)
            c.put((String) kv[i], kv[i + 1]);
    }

    /** How long a close may wait: up to CLOSE_TIMEOUT, but not past the scenario's deadline. */
    static Duration closeTimeout() {
        Deadline d = RUN_DEADLINE;
        return d == null ? CLOSE_TIMEOUT : Duration.ofMillis(Math.min(CLOSE_TIMEOUT.toMillis(), d.remainingMs()));
    }

    static void close(KafkaConsumer<?, ?> c) {
        if (c == null)
            return;
        try {
            c.close(CloseOptions.timeout(closeTimeout()));
        } catch (Exception e) {
            // closing after a failure must not hide the failure
        }
    }

    static void close(AutoCloseable c) {
        if (c == null)
            return;
        try {
            if (c instanceof KafkaProducer)
                ((KafkaProducer<?, ?>) c).close(closeTimeout());
            else if (c instanceof Admin)
                ((Admin) c).close(Duration.ZERO); // every answer needed was awaited already
            else
                c.close();
        } catch (Exception e) {
            // as above
        }
    }

    static ConsumerRecords<byte[], byte[]> poll(KafkaConsumer<byte[], byte[]> c, Duration timeout, String what) {
        try {
            return c.poll(timeout);
        } catch (KafkaException e) {
            throw new Failure(what + ": " + explain(e));
        }
    }

    // --- helpers ----------------------------------------------------------------

    /** Creates a topic and waits until every partition has a leader; returns the seconds it took. */
    static double createTopic(Admin admin, String topic, int partitions, Deadline d) {
        long started = System.nanoTime();
        CreateTopicsOptions opt = new CreateTopicsOptions().timeoutMs(15000);
        await(admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1)), opt).all(), d,
                "create topic " + topic);
        waitUntil(() -> {
            TopicDescription t;
            try {
                t = get(admin.describeTopics(List.of(topic)).allTopicNames(), d).get(topic);
            } catch (RuntimeException e) {
                throw e;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
            return t != null && t.partitions().size() == partitions
                    && t.partitions().stream().allMatch(p -> p.leader() != null && !p.leader().isEmpty());
        }, d, "topic " + topic + " with " + partitions + " partitions and their leaders in metadata");
        return since(started);
    }

    static Set<String> listTopics(Admin admin, Deadline d) {
        return await(admin.listTopics().names(), d, "list topics");
    }

    /** Sends `records` (partition chosen by `partitionOf`, null: the partitioner) and waits for every ack. */
    static List<RecordMetadata> produce(KafkaProducer<byte[], byte[]> p, String topic, List<Rec> records,
            java.util.function.IntFunction<Integer> partitionOf, Deadline d, String what) {
        List<Future<RecordMetadata>> acks = new ArrayList<>();
        try {
            for (int i = 0; i < records.size(); i++)
                acks.add(p.send(records.get(i).toProducerRecord(topic, partitionOf.apply(i))));
            p.flush();
        } catch (KafkaException e) {
            throw new Failure(what + ": sending to " + topic + " failed: " + explain(e));
        }
        List<RecordMetadata> out = new ArrayList<>();
        for (int i = 0; i < acks.size(); i++)
            out.add(await(acks.get(i), d, what + ": delivery of record " + i + " to " + topic));
        return out;
    }

    static List<RecordMetadata> produce(KafkaProducer<byte[], byte[]> p, String topic, List<Rec> records, Deadline d,
            String what) {
        return produce(p, topic, records, i -> 0, d, what);
    }

    /**
     * Reads the given partitions from the beginning without group membership until `expected`
     * records arrived in total and the partitions went quiet.
     */
    static Map<TopicPartition, List<Got>> readFromStart(Opts o, Collection<TopicPartition> tps, String isolation,
            int expected, Deadline d, String what) {
        KafkaConsumer<byte[], byte[]> c = consumer(o, null, "isolation.level", isolation,
                "client.id", "scenario-" + o.scenario + "-reader-" + isolation);
        try {
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, List<Got>> out = new LinkedHashMap<>();
            for (TopicPartition tp : tps)
                out.put(tp, new ArrayList<>());
            QuietReader reader = new QuietReader(expected, d, what);
            while (!reader.done()) {
                ConsumerRecords<byte[], byte[]> batch = poll(c, POLL, what);
                for (ConsumerRecord<byte[], byte[]> r : batch)
                    out.get(new TopicPartition(r.topic(), r.partition())).add(new Got(r));
                reader.add(batch.count());
            }
            return out;
        } finally {
            close(c);
        }
    }

    static List<TopicPartition> partitions(String topic, int n) {
        List<TopicPartition> out = new ArrayList<>();
        for (int i = 0; i < n; i++)
            out.add(new TopicPartition(topic, i));
        return out;
    }

    static Map<String, Object> obj(Object... kv) {
        Map<String, Object> m = new TreeMap<>();
        for (int i = 0; i < kv.length; i += 2)
            m.put((String) kv[i], kv[i + 1]);
        return m;
    }

    static Map<String, Object> brokerEntry(Node n) {
        return obj("id", n.id(), "host", n.host(), "port", n.port());
    }

    // --- scenarios --------------------------------------------------------------

    static Map<String, Object> scenarioAdmin(Opts o, Deadline d) {
        String topic = o.topic("t");
        int partitions = 2;
        Admin admin = admin(o);
        try {
            double created = createTopic(admin, topic, partitions, d);
            double listed = waitUntil(() -> listTopics(admin, d).contains(topic), d, "topic " + topic + " in the topic list");
            TopicDescription t = await(admin.describeTopics(List.of(topic)).allTopicNames(), d,
                    "describe topic " + topic).get(topic);
            if (t == null)
                throw new Failure("describe topic " + topic + ": topic missing from the answer");
            if (!t.name().equals(topic))
                throw new Failure("describe topic " + topic + ": answer names " + t.name());
            if (t.partitions().size() != partitions)
                throw new Failure("describe topic " + topic + ": " + t.partitions().size() + " partitions, expected "
                        + partitions);
            Map<String, Object> leaders = new TreeMap<>();
            for (TopicPartitionInfo p : t.partitions()) {
                if (p.partition() < 0 || p.partition() >= partitions)
                    throw new Failure("describe topic " + topic + ": unexpected partition " + p.partition());
                if (p.leader() == null || p.leader().isEmpty())
                    throw new Failure("describe topic " + topic + ": partition " + p.partition() + " has no leader");
                if (p.replicas().isEmpty() || p.isr().isEmpty())
                    throw new Failure("describe topic " + topic + ": partition " + p.partition()
                            + " has no replicas or in-sync replicas");
                leaders.put(Integer.toString(p.partition()), p.leader().id());
            }
            if (t.topicId() == null || t.topicId().equals(org.apache.kafka.common.Uuid.ZERO_UUID))
                throw new Failure("describe topic " + topic + ": no topic id");
            await(admin.deleteTopics(List.of(topic), new DeleteTopicsOptions().timeoutMs(15000)).all(), d,
                    "delete topic " + topic);
            double deleted = waitUntil(() -> !listTopics(admin, d).contains(topic), d,
                    "topic " + topic + " to disappear from the topic list");
            return obj("topic", topic, "partitions", partitions, "leaders", leaders, "topic_id", t.topicId().toString(),
                    "create_visible_s", created, "list_visible_s", listed, "delete_visible_s", deleted);
        } finally {
            close(admin);
        }
    }

    static Map<String, Object> scenarioMetadata(Opts o, Deadline d) {
        Admin admin = admin(o);
        try {
            DescribeClusterResult dc = admin.describeCluster(new DescribeClusterOptions().timeoutMs(15000));
            Collection<Node> nodes = await(dc.nodes(), d, "describe cluster");
            Node controller = await(dc.controller(), d, "describe cluster (controller)");
            String clusterId = await(dc.clusterId(), d, "describe cluster (cluster id)");
            if (nodes.isEmpty())
                throw new Failure("describe cluster: no brokers");
            List<Map<String, Object>> brokers = nodes.stream()
                    .sorted(Comparator.comparingInt(Node::id))
                    .map(Scenario::brokerEntry)
                    .collect(Collectors.toList());
            Map<String, Object> out = obj("brokers", brokers, "cluster_id", clusterId,
                    "controller", controller == null || controller.isEmpty() ? null : controller.id());

            // Join a group so the coordinator is known for certain, then describe it.
            String topic = o.topic("t");
            String group = o.group("g");
            createTopic(admin, topic, 1, d);
            KafkaConsumer<byte[], byte[]> c = consumer(o, group);
            try {
                c.subscribe(List.of(topic));
                long started = System.nanoTime();
                while (c.assignment().isEmpty()) {
                    if (d.expired())
                        throw new Failure(String.format("metadata group join: no partition assignment after %.1fs",
                                since(started)));
                    poll(c, Duration.ofMillis(100), "metadata group join");
                }
                ConsumerGroupDescription desc = await(admin.describeConsumerGroups(List.of(group)).describedGroups()
                        .get(group), d, "describe group " + group);
                Node coord = desc.coordinator();
                if (coord == null || coord.isEmpty())
                    throw new Failure("describe group " + group + ": no coordinator");
                out.put("coordinator", brokerEntry(coord));
                out.put("group", group);
                out.put("join_s", since(started));
            } finally {
                close(c);
            }
            return out;
        } finally {
            close(admin);
        }
    }

    static Map<String, Object> scenarioRoundtrip(Opts o, Deadline d) {
        String topic = o.topic("t");
        Admin admin = admin(o);
        try {
            createTopic(admin, topic, 1, d);
        } finally {
            close(admin);
        }
        List<Rec> expected = numberedRecords(1, 3, "roundtrip");
        KafkaProducer<byte[], byte[]> p = producer(o);
        try {
            produce(p, topic, expected, d, "roundtrip");
        } finally {
            close(p);
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        List<Got> got = readFromStart(o, List.of(tp), "read_uncommitted", expected.size(), d, "reading " + topic)
                .get(tp);
        assertSameRecords(expected, recs(got), "roundtrip");
        assertContiguous(got, 0, "roundtrip");
        return obj("topic", topic, "records", got.size());
    }

    static Map<String, Object> scenarioCompression(Opts o, Deadline d) {
        List<Rec> expected = mixedRecords(20);
        Map<String, String> topics = new LinkedHashMap<>();
        for (String codec : COMPRESSIONS)
            topics.put(codec, o.topic(codec));
        Admin admin = admin(o);
        try {
            for (String topic : topics.values())
                createTopic(admin, topic, 1, d);
        } finally {
            close(admin);
        }
        for (Map.Entry<String, String> e : topics.entrySet()) {
            KafkaProducer<byte[], byte[]> p = producer(o, "compression.type", e.getKey());
            try {
                produce(p, e.getValue(), expected, d, "compression " + e.getKey());
            } finally {
                close(p);
            }
        }
        List<TopicPartition> tps = topics.values().stream().map(t -> new TopicPartition(t, 0))
                .collect(Collectors.toList());
        Map<TopicPartition, List<Got>> got = readFromStart(o, tps, "read_uncommitted",
                expected.size() * topics.size(), d, "reading " + String.join(", ", topics.values()));
        Map<String, Object> counts = new TreeMap<>();
        for (Map.Entry<String, String> e : topics.entrySet()) {
            List<Got> g = got.get(new TopicPartition(e.getValue(), 0));
            assertSameRecords(expected, recs(g), "compression " + e.getKey());
            assertContiguous(g, 0, "compression " + e.getKey());
            counts.put(e.getKey(), g.size());
        }
        return obj("records_per_codec", counts);
    }

    static Map<String, Object> scenarioIdempotent(Opts o, Deadline d) {
        String topic = o.topic("t");
        int partitions = 3;
        int perPartition = 200;
        int total = partitions * perPartition;
        List<TopicPartition> tps = partitions(topic, partitions);
        Admin admin = admin(o);
        try {
            createTopic(admin, topic, partitions, d);
            List<Rec> records = numberedRecords(0, total - 1, "idempotent");
            // Small batches and no linger: many produce requests, up to five in flight at once.
            KafkaProducer<byte[], byte[]> p = producer(o, "enable.idempotence", true, "acks", "all",
                    "max.in.flight.requests.per.connection", 5, "linger.ms", 0, "batch.size", 1024);
            List<RecordMetadata> acks;
            try {
                acks = produce(p, topic, records, i -> i % partitions, d, "idempotent");
            } finally {
                close(p);
            }
            // Fresh partitions: the k-th record sent to a partition must land at offset k.
            int[] next = new int[partitions];
            for (int i = 0; i < total; i++) {
                RecordMetadata m = acks.get(i);
                if (m.partition() != i % partitions)
                    throw new Failure("record " + i + " acknowledged on partition " + m.partition() + ", sent to "
                            + (i % partitions));
                if (m.offset() != next[m.partition()])
                    throw new Failure(String.format("record %d acknowledged at offset %d of partition %d, expected %d "
                            + "(lost, duplicated or reordered write)", i, m.offset(), m.partition(), next[m.partition()]));
                next[m.partition()]++;
            }

            Map<TopicPartition, List<Got>> got = readFromStart(o, tps, "read_uncommitted", total, d,
                    "reading " + topic);
            Map<String, Object> counts = new TreeMap<>();
            for (TopicPartition tp : tps) {
                List<Rec> expected = new ArrayList<>();
                for (int i = tp.partition(); i < total; i += partitions)
                    expected.add(records.get(i));
                assertSameRecords(expected, recs(got.get(tp)), "idempotent partition " + tp.partition());
                assertContiguous(got.get(tp), 0, "idempotent partition " + tp.partition());
                counts.put(Integer.toString(tp.partition()), got.get(tp).size());
            }
            Map<String, Object> out = obj("topic", topic, "records", total, "records_per_partition", counts);

            // The broker's view of the producer: one producer id per partition, sequences 0..n-1.
            // Informational where the endpoint does not offer DescribeProducers.
            try {
                Map<TopicPartition, org.apache.kafka.clients.admin.DescribeProducersResult.PartitionProducerState> ps =
                        get(admin.describeProducers(tps).all(), d);
                Map<String, Object> producers = new TreeMap<>();
                Set<Long> ids = new TreeSet<>();
                for (TopicPartition tp : tps) {
                    List<ProducerState> active = ps.get(tp).activeProducers();
                    if (active.size() != 1)
                        throw new Failure("describe producers: partition " + tp.partition() + " has "
                                + active.size() + " active producers, expected 1");
                    ProducerState s = active.get(0);
                    if (s.lastSequence() != perPartition - 1)
                        throw new Failure("describe producers: partition " + tp.partition() + " last sequence "
                                + s.lastSequence() + ", expected " + (perPartition - 1));
                    ids.add(s.producerId());
                    producers.put(Integer.toString(tp.partition()),
                            obj("producer_id", s.producerId(), "epoch", s.producerEpoch(),
                                    "last_sequence", s.lastSequence()));
                }
                if (ids.size() != 1)
                    throw new Failure("describe producers: partitions name different producer ids " + ids);
                out.put("producers", producers);
            } catch (Failure f) {
                throw f;
            } catch (Exception e) {
                out.put("describe_producers_error", explain(e));
            }
            return out;
        } finally {
            close(admin);
        }
    }

    static Map<String, Object> scenarioTransactions(Opts o, Deadline d) {
        String topic = o.topic("t");
        String input = o.topic("in");
        String output = o.topic("out");
        String group = o.group("ctp");
        String txId = o.topicPrefix + "-" + o.scenario + "-txn-" + o.runId;
        TopicPartition tp = new TopicPartition(topic, 0);
        TopicPartition inTp = new TopicPartition(input, 0);
        TopicPartition outTp = new TopicPartition(output, 0);
        Admin admin = admin(o);
        try {
            for (String t : List.of(topic, input, output))
                createTopic(admin, t, 1, d);

            List<Rec> first = numberedRecords(1, 3, "committed");
            List<Rec> aborted = numberedRecords(1, 3, "aborted");
            List<Rec> third = numberedRecords(4, 6, "committed");
            List<Rec> inputRecords = numberedRecords(1, 5, "input");
            KafkaProducer<byte[], byte[]> plain = producer(o);
            try {
                produce(plain, input, inputRecords, d, "input records");
            } finally {
                close(plain);
            }

            KafkaProducer<byte[], byte[]> p = producer(o, "transactional.id", txId, "enable.idempotence", true,
                    "transaction.timeout.ms", 30000);
            KafkaConsumer<byte[], byte[]> c = null;
            Map<String, Object> ctp = new TreeMap<>();
            try {
                step("init transactions", p::initTransactions);
                transaction(p, topic, first, true, d, "first transaction");
                transaction(p, topic, aborted, false, d, "second transaction (aborted)");
                transaction(p, topic, third, true, d, "third transaction");

                // Consume-transform-produce: read the input as a group member, write the
                // transformed records and the group's offsets in one transaction.
                c = consumer(o, group, "isolation.level", "read_committed",
                        "client.id", "scenario-" + o.scenario + "-ctp");
                c.subscribe(List.of(input));
                List<ConsumerRecord<byte[], byte[]>> in = new ArrayList<>();
                long started = System.nanoTime();
                while (in.size() < inputRecords.size()) {
                    if (d.expired())
                        throw new Failure(String.format("consume-transform-produce: read %d of %d input records "
                                + "in %.1fs", in.size(), inputRecords.size(), since(started)));
                    for (ConsumerRecord<byte[], byte[]> r : poll(c, POLL, "consume-transform-produce"))
                        in.add(r);
                }
                List<Rec> transformed = new ArrayList<>();
                for (ConsumerRecord<byte[], byte[]> r : in)
                    transformed.add(new Rec(r.key(), concat(b("transformed-"), r.value()), Rec.of(r).headers));
                long next = in.get(in.size() - 1).offset() + 1;
                KafkaConsumer<byte[], byte[]> member = c;
                step("consume-transform-produce: begin transaction", p::beginTransaction);
                produce(p, output, transformed, d, "consume-transform-produce");
                step("consume-transform-produce: send offsets to transaction", () -> p.sendOffsetsToTransaction(
                        Map.of(inTp, new OffsetAndMetadata(next)), member.groupMetadata()));
                step("consume-transform-produce: commit transaction", p::commitTransaction);
                Map<TopicPartition, OffsetAndMetadata> committed = await(
                        admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata(), d,
                        "list offsets of group " + group);
                OffsetAndMetadata om = committed.get(inTp);
                if (om == null || om.offset() != next)
                    throw new Failure("consume-transform-produce: group " + group + " committed " + committed
                            + " for " + input + ", expected offset " + next);
                ctp.put("group", group);
                ctp.put("input_records", in.size());
                ctp.put("committed_offset", om.offset());
                ctp.put("generation", member.groupMetadata().generationId());
                ctp.put("transformed", transformed);
            } finally {
                close(c);
                close(p);
            }

            // Both isolation levels read at once, so their quiet periods overlap.
            List<Rec> committedRecords = new ArrayList<>(first);
            committedRecords.addAll(third);
            List<Rec> everything = new ArrayList<>(first);
            everything.addAll(aborted);
            everything.addAll(third);
            @SuppressWarnings("unchecked")
            List<Rec> transformed = (List<Rec>) ctp.remove("transformed");
            CompletableFuture<Map<TopicPartition, List<Got>>> uncommittedRead = CompletableFuture.supplyAsync(
                    () -> readFromStart(o, List.of(tp), "read_uncommitted", everything.size(), d,
                            "read_uncommitted reader"));
            Map<TopicPartition, List<Got>> rc = readFromStart(o, List.of(tp, outTp), "read_committed",
                    committedRecords.size() + transformed.size(), d, "read_committed reader");
            Map<TopicPartition, List<Got>> ru;
            try {
                ru = uncommittedRead.join();
            } catch (java.util.concurrent.CompletionException e) {
                if (e.getCause() instanceof Failure)
                    throw (Failure) e.getCause();
                throw e;
            }
            assertSameRecords(committedRecords, recs(rc.get(tp)), "read_committed");
            assertSameRecords(transformed, recs(rc.get(outTp)), "read_committed consume-transform-produce output");
            assertSameRecords(everything, recs(ru.get(tp)), "read_uncommitted");
            ListOffsetsResult.ListOffsetsResultInfo end = await(admin.listOffsets(Map.of(tp, OffsetSpec.latest()))
                    .partitionResult(tp), d, "end offset of " + topic);
            // Three data records per transaction plus one commit or abort marker each.
            long expectedEnd = everything.size() + 3;
            if (end.offset() != expectedEnd)
                throw new Failure("end offset of " + topic + " is " + end.offset() + ", expected " + expectedEnd
                        + " (9 records and 3 transaction markers)");
            // The finalized transaction.version the client was told (ApiVersions): 2 means the
            // producer used transactions V2 (KIP-890), which leans on Produce v12+.
            Object tv;
            try {
                org.apache.kafka.clients.admin.FinalizedVersionRange r = get(admin.describeFeatures().featureMetadata(), d)
                        .finalizedFeatures().get("transaction.version");
                tv = r == null ? null : (Object) (int) r.maxVersionLevel();
            } catch (Exception e) {
                tv = "unknown: " + explain(e);
            }
            return obj("topic", topic, "transactional_id", txId, "transaction_version", tv,
                    "read_committed_offsets", offsets(rc.get(tp)),
                    "read_uncommitted_offsets", offsets(ru.get(tp)),
                    "end_offset", end.offset(),
                    "consume_transform_produce", ctp);
        } finally {
            close(admin);
        }
    }

    interface Step {
        void run() throws Exception;
    }

    static void step(String what, Step s) {
        try {
            s.run();
        } catch (Failure f) {
            throw f;
        } catch (Exception e) {
            throw new Failure(what + " failed: " + explain(e));
        }
    }

    static void transaction(KafkaProducer<byte[], byte[]> p, String topic, List<Rec> records, boolean commit,
            Deadline d, String what) {
        step(what + ": begin", p::beginTransaction);
        produce(p, topic, records, d, what);
        if (commit)
            step(what + ": commit", p::commitTransaction);
        else
            step(what + ": abort", p::abortTransaction);
    }

    // --- caller-driven scenarios ------------------------------------------------------

    /** One record of a payload file; headers may repeat keys and hold null values. */
    static final class Payload {
        final int partition;
        final byte[] key;
        final byte[] value;
        final List<Hdr> headers;

        Payload(int partition, byte[] key, byte[] value, List<Hdr> headers) {
            this.partition = partition;
            this.key = key;
            this.value = value;
            this.headers = headers;
        }
    }

    static final class Payloads {
        String topic;
        String compression = "none";
        boolean idempotent = true;
        int maxInFlight = 5;
        int lingerMs = 5;
        final List<Payload> records = new ArrayList<>();

        /** Reads a payload file (the format is in the comment at the top of this file). */
        static Payloads load(String file) {
            Object doc;
            try {
                doc = JsonIn.parse(Files.readString(Path.of(file), StandardCharsets.UTF_8));
            } catch (IOException | IllegalArgumentException e) {
                throw new Failure("reading payload file " + file + " failed: " + explain(e));
            }
            if (!(doc instanceof Map))
                throw new Failure("payload file " + file + ": needs an object with a \"topic\"");
            Map<?, ?> m = (Map<?, ?>) doc;
            Payloads p = new Payloads();
            if (!(m.get("topic") instanceof String) || ((String) m.get("topic")).isEmpty())
                throw new Failure("payload file " + file + ": needs a \"topic\"");
            p.topic = (String) m.get("topic");
            if (m.get("compression") != null)
                p.compression = String.valueOf(m.get("compression"));
            if (!COMPRESSIONS.contains(p.compression))
                throw new Failure("payload file " + file + ": compression " + p.compression + " is not one of "
                        + COMPRESSIONS);
            if (m.get("idempotent") instanceof Boolean)
                p.idempotent = (Boolean) m.get("idempotent");
            if (m.get("max_in_flight") instanceof Number)
                p.maxInFlight = ((Number) m.get("max_in_flight")).intValue();
            if (m.get("linger_ms") instanceof Number)
                p.lingerMs = ((Number) m.get("linger_ms")).intValue();
            Object records = m.get("records");
            if (records != null && !(records instanceof List))
                throw new Failure("payload file " + file + ": \"records\" must be a list");
            int i = 0;
            for (Object r : records == null ? List.of() : (List<?>) records) {
                String where = "payload file " + file + ", record " + i++;
                if (!(r instanceof Map))
                    throw new Failure(where + ": not an object");
                Map<?, ?> rm = (Map<?, ?>) r;
                Object partition = rm.get("partition");
                if (partition != null && !(partition instanceof Number && ((Number) partition).intValue() >= 0))
                    throw new Failure(where + ": partition must be a number >= 0, not " + partition);
                List<Hdr> headers = new ArrayList<>();
                Object hs = rm.get("headers");
                for (Object h : hs instanceof List ? (List<?>) hs : List.of()) {
                    if (!(h instanceof List) || ((List<?>) h).size() != 2 || !(((List<?>) h).get(0) instanceof String))
                        throw new Failure(where + ": a header must be [\"key\", base64|null], not " + h);
                    String k = (String) ((List<?>) h).get(0);
                    headers.add(new Hdr(k, unb64(((List<?>) h).get(1), where + " header " + k)));
                }
                p.records.add(new Payload(partition == null ? 0 : ((Number) partition).intValue(),
                        unb64(rm.get("key"), where + " key"), unb64(rm.get("value"), where + " value"), headers));
            }
            return p;
        }

        static byte[] unb64(Object v, String where) {
            if (v == null)
                return null;
            if (!(v instanceof String))
                throw new Failure(where + ": expected base64 text or null, got " + v);
            try {
                return Base64.getDecoder().decode((String) v);
            } catch (IllegalArgumentException e) {
                throw new Failure(where + ": not base64: " + e.getMessage());
            }
        }

        ProducerRecord<byte[], byte[]> record(int index) {
            Payload r = records.get(index);
            List<Header> hs = new ArrayList<>();
            for (Hdr h : r.headers)
                hs.add(new RecordHeader(h.key, h.value));
            return new ProducerRecord<>(topic, r.partition, null, r.key, r.value, hs);
        }
    }

    static String b64(byte[] v) {
        return v == null ? null : Base64.getEncoder().encodeToString(v);
    }

    /**
     * The client's text for a failed record, led by the Kafka error name and code when the
     * exception maps to one: "INVALID_RECORD (87): InvalidRecordException: ...".
     */
    static String errorText(Throwable t) {
        Throwable e = t;
        while ((e instanceof ExecutionException || e instanceof java.util.concurrent.CompletionException)
                && e.getCause() != null)
            e = e.getCause();
        org.apache.kafka.common.protocol.Errors err = org.apache.kafka.common.protocol.Errors.forException(e);
        String text = explain(e);
        if (err == org.apache.kafka.common.protocol.Errors.UNKNOWN_SERVER_ERROR
                && !(e instanceof org.apache.kafka.common.errors.UnknownServerException))
            return text;
        return err.name() + " (" + err.code() + "): " + text;
    }

    /** Delivered or failed, once per record index; the first report for a record counts. */
    static final class Outcomes {
        final String[] errors; // null: no report yet; "": delivered; text: failed
        int repeated;

        Outcomes(int n) {
            errors = new String[n];
        }

        synchronized void delivered(int i) {
            set(i, "");
        }

        synchronized void failed(int i, String error) {
            set(i, error == null || error.isEmpty() ? "failed without an error text" : error);
        }

        private void set(int i, String outcome) {
            if (errors[i] == null)
                errors[i] = outcome;
            else
                repeated++;
        }

        synchronized List<Integer> pending() {
            List<Integer> out = new ArrayList<>();
            for (int i = 0; i < errors.length; i++)
                if (errors[i] == null)
                    out.add(i);
            return out;
        }

        synchronized List<Object> failures() {
            List<Object> out = new ArrayList<>();
            for (int i = 0; i < errors.length; i++)
                if (errors[i] != null && !errors[i].isEmpty())
                    out.add(obj("index", i, "error", errors[i]));
            return out;
        }

        synchronized Map<String, Object> result() {
            int delivered = 0;
            for (String e : errors)
                if ("".equals(e))
                    delivered++;
            Map<String, Object> out = obj("delivered", delivered, "failed", failures());
            if (repeated > 0)
                out.put("repeated_reports", repeated);
            return out;
        }
    }

    static KafkaProducer<byte[], byte[]> payloadProducer(Opts o, Payloads p, Object... extra) {
        Map<String, Object> c = new HashMap<>();
        putAll(c, "acks", "all", "compression.type", p.compression, "enable.idempotence", p.idempotent,
                "max.in.flight.requests.per.connection", p.maxInFlight, "linger.ms", p.lingerMs,
                "retries", Integer.MAX_VALUE, "retry.backoff.ms", 100, "retry.backoff.max.ms", 1000,
                "delivery.timeout.ms", o.deliveryTimeoutMs,
                // The client insists on delivery.timeout.ms >= linger.ms + request.timeout.ms.
                "request.timeout.ms", Math.max(1, Math.min(30_000, o.deliveryTimeoutMs - p.lingerMs)),
                "max.block.ms", Math.min(15_000, o.deliveryTimeoutMs));
        putAll(c, extra);
        List<Object> kv = new ArrayList<>();
        c.forEach((k, v) -> {
            kv.add(k);
            kv.add(v);
        });
        return producer(o, kv.toArray());
    }

    /** Sends record `i` of `p`; its outcome lands in `outcomes` (a refused send included). */
    static void sendPayload(KafkaProducer<byte[], byte[]> producer, Payloads p, int i, Outcomes outcomes) {
        try {
            producer.send(p.record(i), (md, e) -> {
                if (e == null)
                    outcomes.delivered(i);
                else
                    outcomes.failed(i, errorText(e));
            });
        } catch (KafkaException | IllegalStateException e) {
            outcomes.failed(i, "send() refused the record: " + errorText(e));
        }
    }

    /** flush() has no time limit: run it on another thread and give up at the deadline. */
    static void flush(KafkaProducer<byte[], byte[]> producer, Deadline d, String what) {
        CompletableFuture<Void> f = CompletableFuture.runAsync(producer::flush);
        try {
            f.get(Math.max(1, d.remainingMs()), TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            throw new Failure(what + ": records still without an outcome at the deadline");
        } catch (ExecutionException e) {
            throw new Failure(what + ": flush failed: " + explain(e.getCause()));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new Failure(what + ": interrupted");
        }
    }

    static double waitForPauseFile(Opts o, Deadline d) {
        long started = System.nanoTime();
        while (!Files.exists(Path.of(o.pauseFile))) {
            if (d.expired())
                throw new Failure("paused after " + o.pauseAfter + " records: " + o.pauseFile
                        + " did not appear before the deadline");
            sleep(100);
        }
        return since(started);
    }

    static Map<String, Object> payloadDetails(Payloads p, Outcomes outcomes) {
        Map<String, Object> out = obj("topic", p.topic, "records", p.records.size(), "compression", p.compression,
                "idempotent", p.idempotent);
        out.putAll(outcomes.result());
        return out;
    }

    static Map<String, Object> scenarioProducePayloads(Opts o, Deadline d) {
        Payloads p = Payloads.load(o.payloads);
        Outcomes outcomes = new Outcomes(p.records.size());
        Double pausedS = null;
        KafkaProducer<byte[], byte[]> producer = payloadProducer(o, p);
        try {
            for (int i = 0; i <= p.records.size(); i++) {
                if (o.pauseAfter != null && o.pauseAfter == i) {
                    flush(producer, d, "flush before the pause");
                    pausedS = waitForPauseFile(o, d);
                }
                if (i < p.records.size())
                    sendPayload(producer, p, i, outcomes);
            }
            flush(producer, d, "flush");
        } finally {
            close(producer);
        }
        List<Integer> missing = outcomes.pending();
        if (!missing.isEmpty())
            throw new Failure("no outcome for records " + abbreviate(missing));
        Map<String, Object> out = payloadDetails(p, outcomes);
        if (pausedS != null)
            out.put("paused_s", pausedS);
        return out;
    }

    /** Producer errors after which the producer can do nothing more, an abort included. */
    static boolean fatal(Throwable e) {
        return e instanceof org.apache.kafka.common.errors.ProducerFencedException
                || e instanceof org.apache.kafka.common.errors.InvalidProducerEpochException
                || e instanceof org.apache.kafka.common.errors.OutOfOrderSequenceException
                || e instanceof org.apache.kafka.common.errors.AuthorizationException
                || e instanceof org.apache.kafka.common.errors.UnsupportedVersionException
                || e instanceof org.apache.kafka.common.errors.TransactionalIdAuthorizationException;
    }

    static Map<String, Object> scenarioProduceTransaction(Opts o, Deadline d) {
        Payloads p = Payloads.load(o.payloads);
        Outcomes outcomes = new Outcomes(p.records.size());
        boolean commit = o.transactionEnd.equals("commit");
        boolean committed = false, aborted = false;
        List<String> errors = new ArrayList<>();
        KafkaProducer<byte[], byte[]> producer = payloadProducer(o, p, "transactional.id", o.transactionalId,
                "enable.idempotence", true, "transaction.timeout.ms", Math.max(60_000, o.deliveryTimeoutMs));
        try {
            step("init transactions (" + o.transactionalId + ")", producer::initTransactions);
            step("begin transaction", producer::beginTransaction);
            for (int i = 0; i < p.records.size(); i++)
                sendPayload(producer, p, i, outcomes);
            flush(producer, d, "flush");
            boolean abort = !commit;
            int failed = outcomes.failures().size();
            if (failed > 0) {
                errors.add(failed + " records failed, aborting");
                abort = true;
            }
            if (!abort) {
                try {
                    producer.commitTransaction();
                    committed = true;
                } catch (KafkaException e) {
                    errors.add("commit failed: " + errorText(e));
                    abort = !fatal(e);
                }
            }
            if (abort) {
                try {
                    producer.abortTransaction();
                    aborted = true;
                } catch (KafkaException e) {
                    errors.add("abort failed: " + errorText(e));
                }
            }
            // Records failed by the abort get their callbacks now.
            flush(producer, d, "flush after the transaction");
        } finally {
            close(producer);
        }
        for (int i : outcomes.pending())
            outcomes.failed(i, "no delivery report; the transaction was " + (aborted ? "aborted" : "not committed"));
        Map<String, Object> out = payloadDetails(p, outcomes);
        out.putAll(obj("transactional_id", o.transactionalId, "committed", committed, "aborted", aborted,
                "requested", o.transactionEnd, "error", errors.isEmpty() ? null : String.join("; ", errors)));
        return out;
    }

    static Map<String, Object> scenarioConsumeAll(Opts o, Deadline d) {
        String topic = o.readTopic;
        KafkaConsumer<byte[], byte[]> c = consumer(o, null, "isolation.level", o.isolation, "max.poll.records", 1000,
                "allow.auto.create.topics", false, "client.id", "scenario-" + o.scenario + "-reader");
        List<Map<String, Object>> entries = new ArrayList<>();
        boolean timedOut = false;
        List<TopicPartition> tps = new ArrayList<>();
        try {
            waitUntil(() -> {
                List<org.apache.kafka.common.PartitionInfo> ps = c.partitionsFor(topic,
                        Duration.ofMillis(Math.max(1, Math.min(10_000, d.remainingMs()))));
                if (ps == null || ps.isEmpty())
                    return false;
                tps.clear();
                ps.stream().map(pi -> new TopicPartition(topic, pi.partition()))
                        .sorted(Comparator.comparingInt(TopicPartition::partition)).forEach(tps::add);
                return true;
            }, d, "topic " + topic + " in metadata");
            c.assign(tps);
            c.seekToBeginning(tps);
            long settledAt = -1;
            long lastEndCheck = 0;
            boolean atEnd = false;
            while (true) {
                ConsumerRecords<byte[], byte[]> batch = poll(c, POLL, "reading " + topic);
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    List<Object> headers = new ArrayList<>();
                    for (Header h : r.headers())
                        headers.add(Arrays.asList(h.key(), b64(h.value())));
                    entries.add(obj("partition", r.partition(), "offset", r.offset(), "key", b64(r.key()),
                            "value", b64(r.value()), "headers", headers, "timestamp", r.timestamp()));
                }
                if (batch.count() > 0) {
                    atEnd = false;
                    settledAt = -1;
                }
                if (entries.size() >= o.expect) {
                    // Every partition read to its end (the last stable offset under read_committed).
                    if (!atEnd && System.nanoTime() - lastEndCheck >= 200_000_000L) {
                        lastEndCheck = System.nanoTime();
                        Map<TopicPartition, Long> ends = c.endOffsets(tps,
                                Duration.ofMillis(Math.max(1, Math.min(10_000, d.remainingMs()))));
                        atEnd = true;
                        for (TopicPartition tp : tps)
                            atEnd &= c.position(tp, Duration.ofMillis(Math.max(1, Math.min(10_000, d.remainingMs()))))
                                    >= ends.get(tp);
                    }
                    if (atEnd) {
                        if (settledAt < 0)
                            settledAt = System.nanoTime();
                        if (System.nanoTime() - settledAt >= EXTRA_READ_MS * 1_000_000)
                            break;
                    }
                }
                if (d.expired()) {
                    timedOut = true;
                    break;
                }
            }
        } catch (KafkaException e) {
            throw new Failure("reading " + topic + ": " + explain(e));
        } finally {
            close(c);
        }
        entries.sort(Comparator.comparingInt((Map<String, Object> e) -> (Integer) e.get("partition"))
                .thenComparingLong(e -> (Long) e.get("offset")));
        Map<String, Object> out = obj("topic", topic, "isolation", o.isolation, "records", entries, "expected",
                o.expect, "complete", entries.size() >= o.expect, "partitions", partitionNumbers(tps));
        if (timedOut)
            out.put("timed_out", true);
        return out;
    }

    /**
     * Two members split a 4-partition topic, read everything, commit and leave; a new member of
     * the same group then resumes from the committed offsets.
     */
    static Map<String, Object> scenarioGroups(Opts o, Deadline d, String protocol) {
        String topic = o.topic("t");
        String group = o.group("g");
        int n = 4;
        List<TopicPartition> tps = partitions(topic, n);
        Set<TopicPartition> all = new HashSet<>(tps);
        Admin admin = admin(o);
        try {
            createTopic(admin, topic, n, d);
        } finally {
            close(admin);
        }
        KafkaProducer<byte[], byte[]> p = producer(o);
        KafkaConsumer<byte[], byte[]> c1 = null, c2 = null, c3 = null;
        try {
            c1 = consumer(o, group, "group.protocol", protocol, "client.id", "scenario-" + o.scenario + "-member-1");
            c2 = consumer(o, group, "group.protocol", protocol, "client.id", "scenario-" + o.scenario + "-member-2");
            c1.subscribe(List.of(topic));
            c2.subscribe(List.of(topic));

            // Both members join before anything is produced, so no record is read before the split.
            long started = System.nanoTime();
            Set<TopicPartition> a1, a2;
            while (true) {
                int early = poll(c1, Duration.ofMillis(100), "first member joining").count()
                        + poll(c2, Duration.ofMillis(100), "second member joining").count();
                if (early > 0)
                    throw new Failure("records arrived before any was produced");
                a1 = new HashSet<>(c1.assignment());
                a2 = new HashSet<>(c2.assignment());
                Set<TopicPartition> union = new HashSet<>(a1);
                union.addAll(a2);
                if (!a1.isEmpty() && !a2.isEmpty() && union.equals(all) && a1.size() + a2.size() == n)
                    break;
                if (d.expired())
                    throw new Failure(String.format("the two members did not split the %d partitions within %.1fs: "
                            + "first member has %s, second %s", n, since(started), names(a1), names(a2)));
            }
            double joinS = since(started);

            List<Rec> firstBatch = numberedRecords(1, 40, "groups");
            produce(p, topic, firstBatch, i -> i % n, d, "first batch");
            Map<TopicPartition, List<Got>> got = new HashMap<>();
            for (TopicPartition tp : tps)
                got.put(tp, new ArrayList<>());
            QuietReader reader = new QuietReader(firstBatch.size(), d, "the two members reading");
            while (!reader.done()) {
                for (int m = 0; m < 2; m++) {
                    KafkaConsumer<byte[], byte[]> c = m == 0 ? c1 : c2;
                    Set<TopicPartition> mine = m == 0 ? a1 : a2;
                    ConsumerRecords<byte[], byte[]> batch = poll(c, Duration.ofMillis(100), "member " + (m + 1));
                    for (ConsumerRecord<byte[], byte[]> r : batch) {
                        Got g = new Got(r);
                        if (!mine.contains(g.tp))
                            throw new Failure("member " + (m + 1) + " read partition " + g.tp.partition()
                                    + ", which was assigned to the other member");
                        got.get(g.tp).add(g);
                    }
                    reader.add(batch.count());
                }
            }
            if (!c1.assignment().equals(a1) || !c2.assignment().equals(a2))
                throw new Failure("assignment changed while reading: first member " + names(a1) + " -> "
                        + names(c1.assignment()) + ", second " + names(a2) + " -> " + names(c2.assignment()));
            Map<TopicPartition, Long> committedFirst = new HashMap<>();
            for (TopicPartition tp : tps) {
                List<Rec> expected = new ArrayList<>();
                for (int i = tp.partition(); i < firstBatch.size(); i += n)
                    expected.add(firstBatch.get(i));
                List<Got> g = got.get(tp);
                assertSameRecords(expected, recs(g), "partition " + tp.partition() + " before the commit");
                assertContiguous(g, 0, "partition " + tp.partition() + " before the commit");
                committedFirst.put(tp, g.get(g.size() - 1).offset + 1);
            }
            commitOwn(c1, a1, committedFirst, "first member");
            commitOwn(c2, a2, committedFirst, "second member");
            Map<TopicPartition, OffsetAndMetadata> seen;
            try {
                seen = c1.committed(all, Duration.ofMillis(Math.max(1000, Math.min(15000, d.remainingMs()))));
            } catch (KafkaException e) {
                throw new Failure("committed offsets lookup failed: " + explain(e));
            }
            for (TopicPartition tp : tps) {
                OffsetAndMetadata om = seen.get(tp);
                if (om == null || om.offset() != committedFirst.get(tp))
                    throw new Failure("committed offset of partition " + tp.partition() + " is "
                            + (om == null ? "none" : om.offset()) + ", expected " + committedFirst.get(tp));
            }
            close(c1);
            c1 = null;
            close(c2);
            c2 = null;

            List<Rec> secondBatch = numberedRecords(41, 60, "groups");
            produce(p, topic, secondBatch, i -> i % n, d, "second batch");

            c3 = consumer(o, group, "group.protocol", protocol, "client.id", "scenario-" + o.scenario + "-member-3");
            c3.subscribe(List.of(topic));
            long resumeStarted = System.nanoTime();
            double resumeJoinS = -1;
            Map<TopicPartition, List<Got>> got3 = new HashMap<>();
            for (TopicPartition tp : tps)
                got3.put(tp, new ArrayList<>());
            QuietReader reader3 = new QuietReader(secondBatch.size(), d, "the resuming member reading");
            while (!reader3.done()) {
                ConsumerRecords<byte[], byte[]> batch = poll(c3, POLL, "resuming member");
                if (resumeJoinS < 0 && !c3.assignment().isEmpty())
                    resumeJoinS = since(resumeStarted);
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    Got g = new Got(r);
                    got3.get(g.tp).add(g);
                }
                reader3.add(batch.count());
            }
            if (!c3.assignment().equals(all))
                throw new Failure("the resuming member holds " + names(c3.assignment()) + ", expected all " + n
                        + " partitions");
            Map<String, Object> resumedAt = new TreeMap<>();
            Map<TopicPartition, Long> expectedFinal = new HashMap<>();
            for (TopicPartition tp : tps) {
                List<Rec> expected = new ArrayList<>();
                for (int i = tp.partition(); i < secondBatch.size(); i += n)
                    expected.add(secondBatch.get(i));
                List<Got> g = got3.get(tp);
                assertSameRecords(expected, recs(g), "resuming member, partition " + tp.partition());
                assertContiguous(g, committedFirst.get(tp), "resuming member, partition " + tp.partition());
                resumedAt.put(Integer.toString(tp.partition()), g.get(0).offset);
                expectedFinal.put(tp, g.get(g.size() - 1).offset + 1);
            }
            try {
                c3.commitSync(Duration.ofMillis(Math.max(1000, Math.min(15000, d.remainingMs()))));
                seen = c3.committed(all, Duration.ofMillis(Math.max(1000, Math.min(15000, d.remainingMs()))));
            } catch (KafkaException e) {
                throw new Failure("resuming member's commit failed: " + explain(e));
            }
            Map<String, Object> finalOffsets = new TreeMap<>();
            for (TopicPartition tp : tps) {
                OffsetAndMetadata om = seen.get(tp);
                if (om == null || om.offset() != expectedFinal.get(tp))
                    throw new Failure("committed offset of partition " + tp.partition() + " after resuming is "
                            + (om == null ? "none" : om.offset()) + ", expected " + expectedFinal.get(tp));
                finalOffsets.put(Integer.toString(tp.partition()), om.offset());
            }
            return obj("topic", topic, "group", group, "group_protocol", protocol, "partitions", n,
                    "assignment", List.of(partitionNumbers(a1), partitionNumbers(a2)),
                    "join_s", List.of(joinS, resumeJoinS),
                    "records", List.of(firstBatch.size(), secondBatch.size()),
                    "resumed_at_offset", resumedAt, "committed_offset", finalOffsets);
        } finally {
            close(c1);
            close(c2);
            close(c3);
            close(p);
        }
    }

    static void commitOwn(KafkaConsumer<byte[], byte[]> c, Set<TopicPartition> own, Map<TopicPartition, Long> next,
            String who) {
        Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
        for (TopicPartition tp : own)
            offsets.put(tp, new OffsetAndMetadata(next.get(tp)));
        try {
            c.commitSync(offsets, Duration.ofSeconds(15));
        } catch (KafkaException e) {
            throw new Failure(who + "'s commit failed: " + explain(e));
        }
    }

    static List<Integer> partitionNumbers(Collection<TopicPartition> tps) {
        return tps.stream().map(TopicPartition::partition).sorted().collect(Collectors.toList());
    }

    static String names(Collection<TopicPartition> tps) {
        return "partitions " + partitionNumbers(tps);
    }

    // --- TLS client keys -----------------------------------------------------------

    /** PEM handling for --cert-file/--key-file; Kafka's PEM key store reads PKCS#8 keys only. */
    static final class Pem {
        static final Pattern BLOCK = Pattern.compile(
                "-----BEGIN ([A-Z0-9 ]+)-----\\s*(?:[^\\r\\n]*:[^\\r\\n]*[\\r\\n]+)*([A-Za-z0-9+/=\\s]*?)-----END \\1-----");

        static List<String[]> blocks(String file) {
            String text;
            try {
                text = Files.readString(Path.of(file), StandardCharsets.US_ASCII);
            } catch (IOException e) {
                throw new Failure("reading " + file + " failed: " + explain(e));
            }
            List<String[]> out = new ArrayList<>();
            Matcher m = BLOCK.matcher(text);
            while (m.find())
                out.add(new String[] {m.group(1), m.group(2).replaceAll("\\s", "")});
            return out;
        }

        static String encode(String type, byte[] der) {
            String b64 = Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII)).encodeToString(der);
            return "-----BEGIN " + type + "-----\n" + b64 + "\n-----END " + type + "-----\n";
        }

        static String certificates(String file) {
            StringBuilder out = new StringBuilder();
            for (String[] blk : blocks(file))
                if (blk[0].equals("CERTIFICATE"))
                    out.append(encode("CERTIFICATE", Base64.getDecoder().decode(blk[1])));
            if (out.length() == 0)
                throw new Failure("no CERTIFICATE in " + file);
            return out.toString();
        }

        /** The private key of `file` as PKCS#8 PEM, converting PKCS#1 RSA and SEC1 EC keys. */
        static String pkcs8PrivateKey(String file) {
            for (String[] blk : blocks(file)) {
                byte[] der = Base64.getDecoder().decode(blk[1]);
                switch (blk[0]) {
                    case "PRIVATE KEY":
                        return encode("PRIVATE KEY", der);
                    case "RSA PRIVATE KEY":
                        // PrivateKeyInfo { 0, { rsaEncryption, NULL }, OCTET STRING pkcs1 }
                        return encode("PRIVATE KEY", tlv(0x30, concat(
                                tlv(0x02, new byte[] {0}),
                                tlv(0x30, concat(oid("1.2.840.113549.1.1.1"), tlv(0x05, new byte[0]))),
                                tlv(0x04, der))));
                    case "EC PRIVATE KEY": {
                        // PrivateKeyInfo { 0, { id-ecPublicKey, curve }, OCTET STRING sec1 }
                        byte[] curve = ecCurveOid(der);
                        if (curve == null)
                            throw new Failure("EC key in " + file + " names no curve");
                        return encode("PRIVATE KEY", tlv(0x30, concat(
                                tlv(0x02, new byte[] {0}),
                                tlv(0x30, concat(oid("1.2.840.10045.2.1"), curve)),
                                tlv(0x04, der))));
                    }
                    case "ENCRYPTED PRIVATE KEY":
                        throw new Failure("the private key in " + file + " is encrypted; give an unencrypted key");
                    default:
                        break;
                }
            }
            throw new Failure("no private key in " + file);
        }

        static byte[] tlv(int tag, byte[] content) {
            int n = content.length;
            byte[] len;
            if (n < 0x80)
                len = new byte[] {(byte) n};
            else if (n < 0x100)
                len = new byte[] {(byte) 0x81, (byte) n};
            else if (n < 0x10000)
                len = new byte[] {(byte) 0x82, (byte) (n >> 8), (byte) n};
            else
                len = new byte[] {(byte) 0x83, (byte) (n >> 16), (byte) (n >> 8), (byte) n};
            return concat(new byte[] {(byte) tag}, len, content);
        }

        static byte[] oid(String dotted) {
            String[] parts = dotted.split("\\.");
            java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
            out.write(Integer.parseInt(parts[0]) * 40 + Integer.parseInt(parts[1]));
            for (int i = 2; i < parts.length; i++) {
                long v = Long.parseLong(parts[i]);
                byte[] tmp = new byte[10];
                int k = tmp.length;
                tmp[--k] = (byte) (v & 0x7f);
                for (v >>= 7; v > 0; v >>= 7)
                    tmp[--k] = (byte) (0x80 | (v & 0x7f));
                out.write(tmp, k, tmp.length - k);
            }
            return tlv(0x06, out.toByteArray());
        }

        /** The curve OID (whole TLV) in the [0] parameters of a SEC1 ECPrivateKey. */
        static byte[] ecCurveOid(byte[] der) {
            int[] pos = {0};
            int[] outer = header(der, pos);
            if (outer == null || outer[0] != 0x30)
                return null;
            int end = pos[0] + outer[1];
            while (pos[0] < end) {
                int start = pos[0];
                int[] h = header(der, pos);
                if (h == null)
                    return null;
                if (h[0] == 0xa0) {
                    int[] inner = {pos[0]};
                    int[] oh = header(der, inner);
                    if (oh == null || oh[0] != 0x06)
                        return null;
                    return Arrays.copyOfRange(der, pos[0], inner[0] + oh[1]);
                }
                pos[0] += h[1];
                if (pos[0] <= start)
                    return null;
            }
            return null;
        }

        /** Reads a DER tag and length at pos[0]; leaves pos[0] at the content. */
        static int[] header(byte[] der, int[] pos) {
            if (pos[0] + 2 > der.length)
                return null;
            int tag = der[pos[0]++] & 0xff;
            int len = der[pos[0]++] & 0xff;
            if (len >= 0x80) {
                int k = len & 0x7f;
                if (k < 1 || k > 3 || pos[0] + k > der.length)
                    return null;
                len = 0;
                for (int i = 0; i < k; i++)
                    len = (len << 8) | (der[pos[0]++] & 0xff);
            }
            return pos[0] + len <= der.length ? new int[] {tag, len} : null;
        }
    }

    // --- OAUTHBEARER ----------------------------------------------------------------

    /**
     * SASL/OAUTHBEARER login: a client_credentials grant against --oauth-token-endpoint, as
     * common.py's fetch_oauth_token does. Handed to the clients as a class object, so it works
     * from a source-launched file too.
     */
    public static class OAuthLogin implements AuthenticateCallbackHandler {
        static volatile Opts OPTS;

        @Override
        public void configure(Map<String, ?> configs, String saslMechanism, List<AppConfigurationEntry> jaas) {
        }

        @Override
        public void close() {
        }

        @Override
        public void handle(Callback[] callbacks) throws IOException, UnsupportedCallbackException {
            for (Callback cb : callbacks) {
                if (cb instanceof OAuthBearerTokenCallback) {
                    try {
                        ((OAuthBearerTokenCallback) cb).token(fetch(OPTS));
                    } catch (IOException e) {
                        ((OAuthBearerTokenCallback) cb).error("invalid_token", "token fetch failed: " + explain(e), null);
                    }
                } else if (!(cb instanceof org.apache.kafka.common.security.auth.SaslExtensionsCallback)) {
                    throw new UnsupportedCallbackException(cb);
                }
            }
        }

        static OAuthBearerToken fetch(Opts o) throws IOException {
            StringBuilder form = new StringBuilder("grant_type=client_credentials");
            if (o.oauthScope != null)
                form.append("&scope=").append(URLEncoder.encode(o.oauthScope, StandardCharsets.UTF_8));
            HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(o.oauthTokenEndpoint))
                    .timeout(Duration.ofSeconds(10))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .POST(HttpRequest.BodyPublishers.ofString(form.toString()));
            if (o.oauthClientId != null) {
                String creds = o.oauthClientId + ":" + (o.oauthClientSecret == null ? "" : o.oauthClientSecret);
                req.header("Authorization",
                        "Basic " + Base64.getEncoder().encodeToString(creds.getBytes(StandardCharsets.UTF_8)));
            }
            HttpResponse<String> resp;
            try {
                resp = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build()
                        .send(req.build(), HttpResponse.BodyHandlers.ofString());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted");
            } catch (IOException e) {
                throw new IOException("POST " + o.oauthTokenEndpoint + ": " + explain(e), e);
            }
            if (resp.statusCode() / 100 != 2)
                throw new IOException("token endpoint answered HTTP " + resp.statusCode() + ": " + resp.body());
            String token = jsonString(resp.body(), "access_token");
            if (token == null || token.isEmpty())
                throw new IOException("token endpoint answered without access_token: " + resp.body());
            Matcher exp = Pattern.compile("\"expires_in\"\\s*:\\s*\"?([0-9.]+)").matcher(resp.body());
            long lifetimeS = exp.find() ? (long) Double.parseDouble(exp.group(1)) : 300;
            String principal = null;
            String[] parts = token.split("\\.");
            if (parts.length >= 2) {
                try {
                    principal = jsonString(new String(Base64.getUrlDecoder().decode(parts[1]), StandardCharsets.UTF_8),
                            "sub");
                } catch (IllegalArgumentException e) {
                    // not a JWT: no claims to read
                }
            }
            if (principal == null)
                principal = o.oauthClientId != null ? o.oauthClientId : "kafka-client";
            long now = System.currentTimeMillis();
            String name = principal;
            Set<String> scope = o.oauthScope == null ? Set.of() : Set.of(o.oauthScope.split("\\s+"));
            return new OAuthBearerToken() {
                public String value() {
                    return token;
                }

                public Set<String> scope() {
                    return scope;
                }

                public long lifetimeMs() {
                    return now + lifetimeS * 1000;
                }

                public String principalName() {
                    return name;
                }

                public Long startTimeMs() {
                    return now;
                }
            };
        }

        static String jsonString(String json, String field) {
            Matcher m = Pattern.compile("\"" + Pattern.quote(field) + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"")
                    .matcher(json);
            return m.find() ? m.group(1).replace("\\/", "/").replace("\\\"", "\"").replace("\\\\", "\\") : null;
        }
    }

    // --- output ---------------------------------------------------------------------

    /** Just enough of a JSON reader for payload files: objects, arrays, strings, numbers, literals. */
    static final class JsonIn {
        final String s;
        int pos;

        JsonIn(String s) {
            this.s = s;
        }

        static Object parse(String text) {
            JsonIn in = new JsonIn(text);
            Object v = in.value();
            in.space();
            if (in.pos != in.s.length())
                throw in.error("trailing characters");
            return v;
        }

        IllegalArgumentException error(String what) {
            return new IllegalArgumentException("JSON: " + what + " at character " + pos);
        }

        void space() {
            while (pos < s.length() && Character.isWhitespace(s.charAt(pos)))
                pos++;
        }

        char peek() {
            space();
            if (pos >= s.length())
                throw error("unexpected end");
            return s.charAt(pos);
        }

        void expect(char c) {
            if (peek() != c)
                throw error("expected '" + c + "'");
            pos++;
        }

        Object value() {
            char c = peek();
            if (c == '{') {
                pos++;
                Map<String, Object> m = new LinkedHashMap<>();
                if (peek() == '}') {
                    pos++;
                    return m;
                }
                while (true) {
                    if (peek() != '"')
                        throw error("expected a string key");
                    String k = string();
                    expect(':');
                    m.put(k, value());
                    char n = peek();
                    pos++;
                    if (n == '}')
                        return m;
                    if (n != ',')
                        throw error("expected ',' or '}'");
                }
            }
            if (c == '[') {
                pos++;
                List<Object> l = new ArrayList<>();
                if (peek() == ']') {
                    pos++;
                    return l;
                }
                while (true) {
                    l.add(value());
                    char n = peek();
                    pos++;
                    if (n == ']')
                        return l;
                    if (n != ',')
                        throw error("expected ',' or ']'");
                }
            }
            if (c == '"')
                return string();
            for (String lit : List.of("true", "false", "null")) {
                if (s.startsWith(lit, pos)) {
                    pos += lit.length();
                    return lit.equals("null") ? null : (Object) Boolean.valueOf(lit);
                }
            }
            int start = pos;
            while (pos < s.length() && "+-0123456789.eE".indexOf(s.charAt(pos)) >= 0)
                pos++;
            String num = s.substring(start, pos);
            if (num.isEmpty())
                throw error("unexpected '" + c + "'");
            try {
                return num.matches("-?\\d+") ? (Object) Long.parseLong(num) : (Object) Double.parseDouble(num);
            } catch (NumberFormatException e) {
                throw error("bad number " + num);
            }
        }

        String string() {
            expect('"');
            StringBuilder b = new StringBuilder();
            while (true) {
                if (pos >= s.length())
                    throw error("unterminated string");
                char c = s.charAt(pos++);
                if (c == '"')
                    return b.toString();
                if (c != '\\') {
                    b.append(c);
                    continue;
                }
                if (pos >= s.length())
                    throw error("unterminated string");
                char e = s.charAt(pos++);
                switch (e) {
                    case '"': case '\\': case '/': b.append(e); break;
                    case 'b': b.append('\b'); break;
                    case 'f': b.append('\f'); break;
                    case 'n': b.append('\n'); break;
                    case 'r': b.append('\r'); break;
                    case 't': b.append('\t'); break;
                    case 'u':
                        if (pos + 4 > s.length())
                            throw error("short \\u escape");
                        try {
                            b.append((char) Integer.parseInt(s.substring(pos, pos + 4), 16));
                        } catch (NumberFormatException x) {
                            throw error("bad \\u escape");
                        }
                        pos += 4;
                        break;
                    default:
                        throw error("bad escape \\" + e);
                }
            }
        }
    }

    /** Just enough JSON for the result line; maps other than LinkedHashMap get sorted keys. */
    static final class Json {
        static String write(Object v) {
            StringBuilder b = new StringBuilder();
            write(b, v);
            return b.toString();
        }

        static void write(StringBuilder b, Object v) {
            if (v == null) {
                b.append("null");
            } else if (v instanceof Boolean || v instanceof Integer || v instanceof Long || v instanceof Short) {
                b.append(v);
            } else if (v instanceof Double || v instanceof Float) {
                double x = ((Number) v).doubleValue();
                String s = BigDecimal.valueOf(x).stripTrailingZeros().toPlainString();
                b.append(s.contains(".") ? s : s + ".0");
            } else if (v instanceof Map) {
                Map<?, ?> m = (Map<?, ?>) v;
                Collection<? extends Map.Entry<?, ?>> entries = m instanceof LinkedHashMap ? m.entrySet()
                        : new TreeMap<>(m.entrySet().stream().collect(
                                Collectors.toMap(e -> String.valueOf(e.getKey()), e -> e))).values();
                b.append('{');
                boolean firstEntry = true;
                for (Map.Entry<?, ?> e : entries) {
                    if (!firstEntry)
                        b.append(", ");
                    firstEntry = false;
                    string(b, String.valueOf(e.getKey()));
                    b.append(": ");
                    write(b, e.getValue());
                }
                b.append('}');
            } else if (v instanceof Collection) {
                b.append('[');
                boolean firstItem = true;
                for (Object x : (Collection<?>) v) {
                    if (!firstItem)
                        b.append(", ");
                    firstItem = false;
                    write(b, x);
                }
                b.append(']');
            } else {
                string(b, v.toString());
            }
        }

        static void string(StringBuilder b, String s) {
            b.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"': b.append("\\\""); break;
                    case '\\': b.append("\\\\"); break;
                    case '\n': b.append("\\n"); break;
                    case '\r': b.append("\\r"); break;
                    case '\t': b.append("\\t"); break;
                    default:
                        if (c < 0x20 || c > 0x7e)
                            b.append(String.format("\\u%04x", (int) c));
                        else
                            b.append(c);
                }
            }
            b.append('"');
        }
    }
}
