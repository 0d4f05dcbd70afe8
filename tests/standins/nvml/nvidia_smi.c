/*
 * STAND-IN for NVIDIA's nvidia-smi, for tests only (no GPU on the test machines).
 *
 * Every answer comes through NVML: it dlopen()s libnvidia-ml.so.1 (in the lab, the NVML stand-in
 * that the stand-in driver package installs) and calls the NVML functions, so a driver that is
 * not "loaded" or a version mismatch shows exactly as NVML reports it, never from a shell script.
 * Supported: no arguments (a short banner with "Driver Version" and "CUDA Version"), -L,
 * --query-gpu=FIELDS and --query-compute-apps=FIELDS with --format=csv[,noheader][,nounits].
 * Exit status: the NVML error code when NVML fails (9 not loaded, 18 mismatch), like the real one.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned long long total, free, used; } mem_t;
typedef struct { unsigned int gpu, memory; } util_t;
typedef struct { unsigned int pid; unsigned long long used; unsigned int gi, ci; } proc_t;

static void *lib;

static void *sym(const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "NVIDIA-SMI: NVML symbol %s not found\n", name);
        exit(13);
    }
    return p;
}

#define CALL(type, name) ((type)sym(name))
typedef int (*fn_v)(void);
typedef int (*fn_buf)(char *, unsigned int);
typedef int (*fn_int)(int *);
typedef int (*fn_uint)(unsigned int *);
typedef int (*fn_handle)(unsigned int, void **);
typedef int (*fn_dbuf)(void *, char *, unsigned int);
typedef int (*fn_duint)(void *, unsigned int *);
typedef int (*fn_dmem)(void *, mem_t *);
typedef int (*fn_dutil)(void *, util_t *);
typedef int (*fn_dtemp)(void *, int, unsigned int *);
typedef int (*fn_decc)(void *, int, int, unsigned long long *);
typedef int (*fn_dull)(void *, unsigned long long *);
typedef int (*fn_dprocs)(void *, unsigned int *, proc_t *);
typedef const char *(*fn_err)(int);

static int noheader, nounits;

static const char *err(int rc) { return CALL(fn_err, "nvmlErrorString")(rc); }

static void init_or_die(void) {
    lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!lib) {
        printf("NVIDIA-SMI couldn't find libnvidia-ml.so library in your system. Please make sure"
               " that the NVIDIA Display Driver is properly installed and present in your system."
               "\nPlease also try adding directory that contains libnvidia-ml.so to your system"
               " PATH.\n");
        exit(12);
    }
    int rc = CALL(fn_v, "nvmlInit_v2")();
    if (rc == 0) return;
    if (rc == 9) {
        printf("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
               "Make sure that the latest NVIDIA driver is installed and running.\n\n");
    } else if (rc == 18) {
        char v[96] = "";
        CALL(fn_buf, "nvmlSystemGetNVMLVersion")(v, sizeof v);
        printf("Failed to initialize NVML: Driver/library version mismatch\nNVML library version:"
               " %s\n", v);
    } else {
        printf("Failed to initialize NVML: %s\n", err(rc));
    }
    exit(rc);
}

static unsigned int gpu_count(void) {
    unsigned int n = 0;
    int rc = CALL(fn_uint, "nvmlDeviceGetCount_v2")(&n);
    if (rc) {
        printf("Unable to determine the device count. %s\n", err(rc));
        exit(rc);
    }
    if (n == 0) {
        printf("No devices were found\n");
        exit(6);
    }
    return n;
}

static void *handle(unsigned int i) {
    void *h = NULL;
    int rc = CALL(fn_handle, "nvmlDeviceGetHandleByIndex_v2")(i, &h);
    if (rc) {
        printf("Unable to determine the device handle for GPU%u: %s\n", i, err(rc));
        exit(rc);
    }
    return h;
}

/* One field of one GPU into out; "[N/A]" when NVML cannot tell; 0, or -1 for an unknown field. */
static int field(const char *name, unsigned int i, void *h, char *out, size_t len) {
    char buf[256] = "";
    unsigned int u = 0;
    unsigned long long ull = 0;
    mem_t mem;
    util_t util;
    int rc = 0;
#define UNIT(s) (nounits ? "" : (s))
    if (!strcmp(name, "index")) {
        snprintf(out, len, "%u", i);
    } else if (!strcmp(name, "count")) {
        snprintf(out, len, "%u", gpu_count());
    } else if (!strcmp(name, "driver_version")) {
        if (!(rc = CALL(fn_buf, "nvmlSystemGetDriverVersion")(buf, sizeof buf)))
            snprintf(out, len, "%s", buf);
    } else if (!strcmp(name, "name") || !strcmp(name, "gpu_name")) {
        if (!(rc = CALL(fn_dbuf, "nvmlDeviceGetName")(h, buf, sizeof buf)))
            snprintf(out, len, "%s", buf);
    } else if (!strcmp(name, "uuid") || !strcmp(name, "gpu_uuid")) {
        if (!(rc = CALL(fn_dbuf, "nvmlDeviceGetUUID")(h, buf, sizeof buf)))
            snprintf(out, len, "%s", buf);
    } else if (!strncmp(name, "memory.", 7)) {
        if (!(rc = CALL(fn_dmem, "nvmlDeviceGetMemoryInfo")(h, &mem))) {
            if (!strcmp(name, "memory.total")) ull = mem.total;
            else if (!strcmp(name, "memory.used")) ull = mem.used;
            else if (!strcmp(name, "memory.free")) ull = mem.free;
            else return -1;
            snprintf(out, len, "%llu%s", ull >> 20, UNIT(" MiB"));
        }
    } else if (!strcmp(name, "utilization.gpu") || !strcmp(name, "utilization.memory")) {
        if (!(rc = CALL(fn_dutil, "nvmlDeviceGetUtilizationRates")(h, &util)))
            snprintf(out, len, "%u%s", name[12] == 'g' ? util.gpu : util.memory, UNIT(" %"));
    } else if (!strcmp(name, "temperature.gpu")) {
        if (!(rc = CALL(fn_dtemp, "nvmlDeviceGetTemperature")(h, 0, &u)))
            snprintf(out, len, "%u", u);
    } else if (!strcmp(name, "power.draw")) {
        if (!(rc = CALL(fn_duint, "nvmlDeviceGetPowerUsage")(h, &u)))
            snprintf(out, len, "%.2f%s", u / 1000.0, UNIT(" W"));
    } else if (!strcmp(name, "persistence_mode")) {
        if (!(rc = CALL(fn_duint, "nvmlDeviceGetPersistenceMode")(h, &u)))
            snprintf(out, len, "%s", u ? "Enabled" : "Disabled");
    } else if (!strcmp(name, "pcie.link.width.current")) {
        if (!(rc = CALL(fn_duint, "nvmlDeviceGetCurrPcieLinkWidth")(h, &u)))
            snprintf(out, len, "%u", u);
    } else if (!strcmp(name, "pcie.link.width.max")) {
        if (!(rc = CALL(fn_duint, "nvmlDeviceGetMaxPcieLinkWidth")(h, &u)))
            snprintf(out, len, "%u", u);
    } else if (!strcmp(name, "ecc.errors.uncorrected.volatile.total")) {
        if (!(rc = CALL(fn_decc, "nvmlDeviceGetTotalEccErrors")(h, 1, 0, &ull)))
            snprintf(out, len, "%llu", ull);
    } else if (!strcmp(name, "clocks_throttle_reasons.active") ||
               !strcmp(name, "clocks_event_reasons.active")) {
        if (!(rc = CALL(fn_dull, "nvmlDeviceGetCurrentClocksEventReasons")(h, &ull)))
            snprintf(out, len, "0x%016llx", ull);
    } else {
        return -1;
    }
#undef UNIT
    if (rc) snprintf(out, len, "%s", rc == 3 ? "[N/A]" : "[Unknown Error]");
    return 0;
}

static int parse_format(const char *fmt) {
    char copy[128];
    snprintf(copy, sizeof copy, "%s", fmt);
    int csv = 0;
    for (char *t = strtok(copy, ","); t; t = strtok(NULL, ",")) {
        if (!strcmp(t, "csv")) csv = 1;
        else if (!strcmp(t, "noheader")) noheader = 1;
        else if (!strcmp(t, "nounits")) nounits = 1;
    }
    return csv;
}

static int query_gpu(const char *fields) {
    char copy[1024], *names[64];
    int n = 0;
    snprintf(copy, sizeof copy, "%s", fields);
    for (char *t = strtok(copy, ","); t && n < 64; t = strtok(NULL, ",")) names[n++] = t;
    char out[256];
    for (int f = 0; f < n; f++) { /* validate before touching NVML, like the real one */
        if (strcmp(names[f], "count") && strcmp(names[f], "index") && strcmp(names[f], "name") &&
            strcmp(names[f], "gpu_name") && strcmp(names[f], "uuid") &&
            strcmp(names[f], "gpu_uuid") && strcmp(names[f], "driver_version") &&
            strncmp(names[f], "memory.", 7) && strncmp(names[f], "utilization.", 12) &&
            strcmp(names[f], "temperature.gpu") && strcmp(names[f], "power.draw") &&
            strcmp(names[f], "persistence_mode") && strncmp(names[f], "pcie.link.width.", 16) &&
            strcmp(names[f], "ecc.errors.uncorrected.volatile.total") &&
            strcmp(names[f], "clocks_throttle_reasons.active") &&
            strcmp(names[f], "clocks_event_reasons.active")) {
            printf("Field \"%s\" is not a valid field to query.\n\n", names[f]);
            return 2;
        }
    }
    init_or_die();
    unsigned int count = gpu_count();
    if (!noheader) {
        for (int f = 0; f < n; f++) printf("%s%s", f ? ", " : "", names[f]);
        printf("\n");
    }
    for (unsigned int i = 0; i < count; i++) {
        void *h = handle(i);
        for (int f = 0; f < n; f++) {
            if (field(names[f], i, h, out, sizeof out) < 0) {
                printf("Field \"%s\" is not a valid field to query.\n\n", names[f]);
                return 2;
            }
            printf("%s%s", f ? ", " : "", out);
        }
        printf("\n");
    }
    return 0;
}

static int query_apps(const char *fields) {
    char copy[512], *names[16];
    int n = 0;
    snprintf(copy, sizeof copy, "%s", fields);
    for (char *t = strtok(copy, ","); t && n < 16; t = strtok(NULL, ",")) names[n++] = t;
    init_or_die();
    unsigned int count = gpu_count();
    if (!noheader) {
        for (int f = 0; f < n; f++) printf("%s%s", f ? ", " : "", names[f]);
        printf("\n");
    }
    for (unsigned int i = 0; i < count; i++) {
        void *h = handle(i);
        proc_t procs[64];
        unsigned int np = 64;
        if (CALL(fn_dprocs, "nvmlDeviceGetComputeRunningProcesses_v3")(h, &np, procs)) continue;
        char uuid[96] = "";
        CALL(fn_dbuf, "nvmlDeviceGetUUID")(h, uuid, sizeof uuid);
        for (unsigned int p = 0; p < np; p++) {
            for (int f = 0; f < n; f++) {
                char out[256] = "[N/A]";
                if (!strcmp(names[f], "pid")) {
                    snprintf(out, sizeof out, "%u", procs[p].pid);
                } else if (!strcmp(names[f], "gpu_uuid")) {
                    snprintf(out, sizeof out, "%s", uuid);
                } else if (!strcmp(names[f], "used_gpu_memory") ||
                           !strcmp(names[f], "used_memory")) {
                    snprintf(out, sizeof out, "%llu%s", procs[p].used >> 20,
                             nounits ? "" : " MiB");
                } else if (!strcmp(names[f], "process_name") || !strcmp(names[f], "name")) {
                    char path[64];
                    snprintf(path, sizeof path, "/proc/%u/comm", procs[p].pid);
                    FILE *fh = fopen(path, "r");
                    if (fh) {
                        if (fgets(out, sizeof out, fh)) out[strcspn(out, "\n")] = 0;
                        fclose(fh);
                    }
                }
                printf("%s%s", f ? ", " : "", out);
            }
            printf("\n");
        }
    }
    return 0;
}

static int list_gpus(void) {
    init_or_die();
    unsigned int count = gpu_count();
    for (unsigned int i = 0; i < count; i++) {
        void *h = handle(i);
        char name[96] = "", uuid[96] = "";
        CALL(fn_dbuf, "nvmlDeviceGetName")(h, name, sizeof name);
        CALL(fn_dbuf, "nvmlDeviceGetUUID")(h, uuid, sizeof uuid);
        printf("GPU %u: %s (UUID: %s)\n", i, name, uuid);
    }
    return 0;
}

static int banner(void) {
    init_or_die();
    char drv[96] = "[N/A]";
    int cuda = 0;
    CALL(fn_buf, "nvmlSystemGetDriverVersion")(drv, sizeof drv);
    CALL(fn_int, "nvmlSystemGetCudaDriverVersion_v2")(&cuda);
    printf("+-----------------------------------------------------------------------------+\n");
    printf("| NVIDIA-SMI %-14s Driver Version: %-14s CUDA Version: %d.%-5d |\n", drv, drv,
           cuda / 1000, (cuda % 1000) / 10);
    printf("| (STAND-IN nvidia-smi: answers from the NVML stand-in)                       |\n");
    printf("+-----------------------------------------------------------------------------+\n");
    unsigned int count = gpu_count();
    for (unsigned int i = 0; i < count; i++) {
        char name[96] = "";
        CALL(fn_dbuf, "nvmlDeviceGetName")(handle(i), name, sizeof name);
        printf("| %3u  %-72s|\n", i, name);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *query = NULL, *apps = NULL, *fmt = NULL;
    int list = 0;
    for (int a = 1; a < argc; a++) {
        if (!strncmp(argv[a], "--query-gpu=", 12)) query = argv[a] + 12;
        else if (!strncmp(argv[a], "--query-compute-apps=", 21)) apps = argv[a] + 21;
        else if (!strncmp(argv[a], "--format=", 9)) fmt = argv[a] + 9;
        else if (!strcmp(argv[a], "-L") || !strcmp(argv[a], "--list-gpus")) list = 1;
        else {
            printf("nvidia-smi stand-in: unsupported argument %s\n", argv[a]);
            return 2;
        }
    }
    if ((query || apps) && (!fmt || !parse_format(fmt))) {
        printf("--format=csv is required with --query-gpu and --query-compute-apps\n");
        return 2;
    }
    if (list) return list_gpus();
    if (query) return query_gpu(query);
    if (apps) return query_apps(apps);
    return banner();
}
