/*
 * STAND-IN for NVIDIA's libnvidia-ml.so.1, for tests only (no GPU on the test machines).
 *
 * Exports the NVML symbols that the real pynvml (nvidia-ml-py) calls from the audit probe and
 * answers from a scenario file named by $NVML_STANDIN_SCENARIO (default /etc/nvml-standin/scenario,
 * the path the stand-in driver package installs): "key=value" lines, '#' comments.
 * Any value written as "!N" makes that call return NVML error N (3 = not supported,
 * 15 = GPU is lost, 18 = driver/library mismatch...). Keys:
 *   init, init_sleep (seconds nvmlInit blocks, a hung driver), driver, nvml, cuda, count,
 *   module_version_file,
 *   gpuI.handle, .name, .uuid, .mem_total, .mem_used, .util_gpu, .util_mem, .temp, .power (mW),
 *   .persistence, .ecc_unc, .remap ("corr,unc,pending,failure"), .retired_pending, .pcie_cur,
 *   .pcie_max, .clocks (hex or decimal bit mask), .procs ("pid:bytes,pid:bytes"),
 *   .inforom ("0" valid, "!14" corrupted, as nvmlDeviceValidateInforom answers), .mig ("1"/"0")
 * A missing key returns 3 (not supported), except init/handle (success) and count (0).
 * module_version_file (the packaged scenario sets /sys/module/nvidia/version) mirrors the real
 * driver's start-up: nvmlInit fails with 9 (driver not loaded) when that file is missing or empty
 * and with 18 (driver/library version mismatch) when it names another version than `driver`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXE 512
static char keys[MAXE][64];
static char vals[MAXE][512];
static int nentries = -1;
static char devs[64];

typedef struct { unsigned long long total, free, used; } mem_t;
typedef struct { unsigned int gpu, memory; } util_t;
typedef struct { unsigned int pid; unsigned long long used; unsigned int gi, ci; } proc_t;

static void load(void) {
    if (nentries >= 0) return;
    nentries = 0;
    const char *path = getenv("NVML_STANDIN_SCENARIO");
    if (!path) path = "/etc/nvml-standin/scenario";
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[600];
    while (nentries < MAXE && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0] == '#' || !strchr(line, '=')) continue;
        char *eq = strchr(line, '=');
        *eq = 0;
        snprintf(keys[nentries], sizeof keys[0], "%s", line);
        snprintf(vals[nentries], sizeof vals[0], "%s", eq + 1);
        nentries++;
    }
    fclose(f);
}

static const char *get(const char *key) {
    load();
    for (int i = 0; i < nentries; i++)
        if (strcmp(keys[i], key) == 0) return vals[i];
    return NULL;
}

static const char *gget(void *dev, const char *field) {
    char key[96];
    snprintf(key, sizeof key, "gpu%d.%s", (int)((char *)dev - devs), field);
    return get(key);
}

/* 0 and *out filled, or the NVML error code for this value (missing -> 3). */
static int num(const char *v, unsigned long long *out) {
    if (!v) return 3;
    if (v[0] == '!') return atoi(v + 1);
    *out = strtoull(v, NULL, 0);
    return 0;
}

static int str(const char *v, char *buf, unsigned int len) {
    if (!v) return 3;
    if (v[0] == '!') return atoi(v + 1);
    if (strlen(v) + 1 > len) return 7;
    strcpy(buf, v);
    return 0;
}

static int dev_num(void *dev, const char *field, unsigned long long *out) {
    return num(gget(dev, field), out);
}

/* The "loaded kernel module" check: 0, 9 (not loaded) or 18 (other version loaded). */
static int module_state(void) {
    const char *file = get("module_version_file");
    if (!file) return 0;
    FILE *f = fopen(file, "r");
    if (!f) return 9;
    char loaded[128] = "";
    if (!fgets(loaded, sizeof loaded, f)) loaded[0] = 0;
    fclose(f);
    loaded[strcspn(loaded, " \t\r\n")] = 0;
    if (!loaded[0]) return 9;
    const char *driver = get("driver");
    if (driver && strcmp(driver, loaded) != 0) return 18;
    return 0;
}

int nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    unsigned long long rc = 0;
    const char *hang = get("init_sleep"); /* a hung driver: nvmlInit blocks this many seconds */
    if (hang) sleep((unsigned int)atoi(hang));
    const char *v = get("init");
    if (v && v[0] == '!') return atoi(v + 1);
    if (v) num(v, &rc);
    if (rc) return (int)rc;
    return module_state();
}
int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
int nvmlInit(void) { return nvmlInitWithFlags(0); }
int nvmlShutdown(void) { return 0; }

const char *nvmlErrorString(int r) {
    switch (r) {
    case 0: return "Success";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 7: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case 12: return "NVML Shared Library Not Found";
    case 13: return "Function Not Found";
    case 15: return "GPU is lost";
    case 18: return "RM has detected an NVML/RM version mismatch.";
    default: return "Unknown Error";
    }
}

int nvmlSystemGetDriverVersion(char *buf, unsigned int len) { return str(get("driver"), buf, len); }
int nvmlSystemGetNVMLVersion(char *buf, unsigned int len) { return str(get("nvml"), buf, len); }
int nvmlSystemGetCudaDriverVersion(int *v) {
    unsigned long long x; int rc = num(get("cuda"), &x); if (!rc) *v = (int)x; return rc;
}
int nvmlSystemGetCudaDriverVersion_v2(int *v) { return nvmlSystemGetCudaDriverVersion(v); }

int nvmlDeviceGetCount_v2(unsigned int *count) {
    unsigned long long x = 0; const char *v = get("count");
    if (v) { int rc = num(v, &x); if (rc) return rc; }
    *count = (unsigned int)x; return 0;
}
int nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **dev) {
    unsigned int count; nvmlDeviceGetCount_v2(&count);
    if (index >= count || index >= sizeof devs) return 2;
    char key[32]; snprintf(key, sizeof key, "gpu%u.handle", index);
    const char *v = get(key);
    if (v && v[0] == '!') return atoi(v + 1);
    *dev = &devs[index];
    return 0;
}
int nvmlDeviceGetHandleByIndex(unsigned int index, void **dev) {
    return nvmlDeviceGetHandleByIndex_v2(index, dev);
}

int nvmlDeviceGetName(void *d, char *buf, unsigned int len) { return str(gget(d, "name"), buf, len); }
int nvmlDeviceGetUUID(void *d, char *buf, unsigned int len) { return str(gget(d, "uuid"), buf, len); }

int nvmlDeviceGetMemoryInfo(void *d, mem_t *m) {
    unsigned long long t, u; int rc;
    if ((rc = dev_num(d, "mem_total", &t)) || (rc = dev_num(d, "mem_used", &u))) return rc;
    m->total = t; m->used = u; m->free = t - u; return 0;
}
int nvmlDeviceGetUtilizationRates(void *d, util_t *u) {
    unsigned long long g, m; int rc;
    if ((rc = dev_num(d, "util_gpu", &g)) || (rc = dev_num(d, "util_mem", &m))) return rc;
    u->gpu = (unsigned int)g; u->memory = (unsigned int)m; return 0;
}

#define UINT_GETTER(fn, field) \
    int fn(void *d, unsigned int *out) { \
        unsigned long long x; int rc = dev_num(d, field, &x); if (!rc) *out = (unsigned int)x; \
        return rc; }
UINT_GETTER(nvmlDeviceGetPowerUsage, "power")
UINT_GETTER(nvmlDeviceGetPersistenceMode, "persistence")
UINT_GETTER(nvmlDeviceGetRetiredPagesPendingStatus, "retired_pending")
UINT_GETTER(nvmlDeviceGetCurrPcieLinkWidth, "pcie_cur")
UINT_GETTER(nvmlDeviceGetMaxPcieLinkWidth, "pcie_max")

int nvmlDeviceGetTemperature(void *d, int sensor, unsigned int *out) {
    (void)sensor;
    unsigned long long x; int rc = dev_num(d, "temp", &x); if (!rc) *out = (unsigned int)x;
    return rc;
}
int nvmlDeviceGetTotalEccErrors(void *d, int type, int counter, unsigned long long *out) {
    (void)type; (void)counter;
    return dev_num(d, "ecc_unc", out);
}
int nvmlDeviceGetRemappedRows(void *d, unsigned int *c, unsigned int *u, unsigned int *p,
                              unsigned int *f) {
    const char *v = gget(d, "remap");
    if (!v) return 3;
    if (v[0] == '!') return atoi(v + 1);
    if (sscanf(v, "%u,%u,%u,%u", c, u, p, f) != 4) return 999;
    return 0;
}
int nvmlDeviceGetCurrentClocksEventReasons(void *d, unsigned long long *out) {
    return dev_num(d, "clocks", out);
}
int nvmlDeviceGetCurrentClocksThrottleReasons(void *d, unsigned long long *out) {
    return dev_num(d, "clocks", out);
}

int nvmlDeviceGetComputeRunningProcesses_v3(void *d, unsigned int *count, proc_t *infos) {
    const char *v = gget(d, "procs");
    if (v && v[0] == '!') return atoi(v + 1);
    proc_t found[64]; unsigned int n = 0;
    if (v) {
        char copy[512]; snprintf(copy, sizeof copy, "%s", v);
        for (char *tok = strtok(copy, ","); tok && n < 64; tok = strtok(NULL, ",")) {
            unsigned int pid; unsigned long long used;
            if (sscanf(tok, "%u:%llu", &pid, &used) == 2) {
                found[n].pid = pid; found[n].used = used;
                found[n].gi = 0xFFFFFFFF; found[n].ci = 0xFFFFFFFF; n++;
            }
        }
    }
    if (n == 0) { *count = 0; return 0; }
    if (infos == NULL || *count < n) { *count = n; return 7; }
    memcpy(infos, found, n * sizeof(proc_t));
    *count = n;
    return 0;
}
int nvmlDeviceGetComputeRunningProcesses_v2(void *d, unsigned int *count, proc_t *infos) {
    return nvmlDeviceGetComputeRunningProcesses_v3(d, count, infos);
}

int nvmlDeviceValidateInforom(void *d) {
    unsigned long long x; return dev_num(d, "inforom", &x);
}
int nvmlDeviceGetMigMode(void *d, unsigned int *current, unsigned int *pending) {
    unsigned long long x; int rc = dev_num(d, "mig", &x);
    if (!rc) { *current = (unsigned int)x; *pending = (unsigned int)x; }
    return rc;
}
