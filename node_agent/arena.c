/*
 * edgefleet's plan-aware arena: the large blocks of a training step that repeats, placed once
 * at planned offsets in one resident block, so a step neither faults fresh pages nor leaves
 * holes in a heap.
 *
 * Why: glibc's default heap keeps freed pages but fragments under checkpointing's
 * free-and-recompute pattern (about twice the live tensors at the peak); mapping each large
 * block on its own (the agent's fixed 128 KiB threshold, jemalloc) keeps memory near the live
 * tensors but faults every page in again each step (1.7-1.9 x glibc's step time measured here).
 * A board's step is the same sequence of allocations every time (the schedule, the batch and
 * the shapes are fixed), so the sequence can be recorded once and planned offline, as PyTorch
 * mobile's allocation planner does: the peak is the plan's, the pages stay.
 *
 * How: preloaded (LD_PRELOAD), this library takes every block of 128 KiB or more (malloc,
 * posix_memalign, aligned_alloc, memalign at alignments up to 64) and leaves the rest, and
 * calloc, to glibc. The training thread brackets each step with edgefleet_arena_step_begin()
 * and edgefleet_arena_step_end():
 *   1st step: record its large blocks (size, when allocated, when freed); at its end, plan
 *             offsets for the blocks freed within it (greedy by size over their lifetimes);
 *   later:    replay: the k-th large block of a step goes to the k-th planned offset when its
 *             size is the recorded one and no live block holds that range (checked, so a
 *             sequence that differs costs memory, never corrupts); a step whose sequence
 *             differed (a new batch, a new plan) has the next one recorded anew.
 * Blocks not planned (other threads', ones that outlive the step, mismatches) are mapped from
 * a second reserved range and their pages returned at free, as the fixed threshold does.
 * Address space is reserved once (MAP_NORESERVE: no RAM until touched); a pointer is ours iff
 * it lies in that range, so free() of glibc's blocks costs one comparison.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <dlfcn.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define LARGE_BYTES ((size_t)128 << 10)
#define ALIGN_BYTES ((size_t)64)
#define HEADER_BYTES ALIGN_BYTES
#define MAX_RECORDED 65536
#define MAX_LIVE 65536
#define MAX_EXTENTS 65536
#define NOT_PLANNED UINT64_MAX
#define DEFAULT_RESERVE_BYTES ((size_t)64 << 30)
#define LEAST_RESERVE_BYTES ((size_t)1 << 30)

enum mode { MODE_OFF, MODE_RECORD, MODE_REPLAY, MODE_DISABLED };
enum kind { KIND_PLANNED = 1, KIND_FALLBACK = 2 };

struct header {
    size_t size;     /* what the caller asked for */
    size_t span;     /* the bytes this block holds in its range, header included */
    uint32_t kind;
    uint32_t index;  /* planned: slot in live[]; fallback: recorded index + 1, or 0 */
    uint64_t magic;
};

struct extent {
    uintptr_t start;
    size_t length;
};

struct live_block {
    uintptr_t start, end;
    struct header *header;
};

struct edgefleet_arena_stats {
    uint64_t reserved_bytes;
    uint64_t planned_bytes;        /* the plan's extent: what the arena's range holds resident */
    uint64_t planned_live_bytes;   /* the planned blocks' own peak: the least any placement needs */
    uint64_t planned_blocks;
    uint64_t steps_recorded;
    uint64_t steps_replayed;
    uint64_t hits;                 /* large blocks placed at their planned offsets */
    uint64_t mismatches;           /* blocks whose size or position differed from the record */
    uint64_t overlaps;             /* planned offsets still held by a live block */
    uint64_t fallback_blocks;      /* large blocks mapped outside the plan */
    uint64_t fallback_live_bytes;
    uint64_t fallback_peak_bytes;
    uint64_t mode;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t region_start, region_end, plan_start, plan_limit, fallback_start;
static int initialised;
static enum mode mode = MODE_OFF;
static pthread_t owner;
static int owner_set;
static size_t page_bytes = 4096;
static const uint64_t MAGIC = 0xed6ef1ee7a7e4aULL;

/* The record of one step. */
static size_t recorded_size[MAX_RECORDED];
static uint64_t recorded_alloc[MAX_RECORDED], recorded_free[MAX_RECORDED];
static uint64_t planned_offset[MAX_RECORDED];
static size_t recorded_count, planned_count;
static int record_overflowed;
static uint64_t clock_ticks;
static size_t cursor;
static uint64_t step_mismatches;

static struct live_block live[MAX_LIVE];
static size_t live_count;
static struct extent free_extents[MAX_EXTENTS];
static size_t extent_count;
static struct edgefleet_arena_stats stats;

static size_t round_up(size_t value, size_t to) { return (value + to - 1) / to * to; }

static int ours(const void *pointer) {
    uintptr_t at = (uintptr_t)pointer;
    return at >= region_start && at < region_end;
}

static void initialise(void) {
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0) page_bytes = (size_t)page;
    size_t reserve = DEFAULT_RESERVE_BYTES;
    const char *wanted = getenv("EDGEFLEET_ARENA_RESERVE_BYTES");
    if (wanted != NULL) {
        char *end = NULL;
        unsigned long long parsed = strtoull(wanted, &end, 10);
        if (end != wanted && *end == '\0' && parsed >= LEAST_RESERVE_BYTES) reserve = parsed;
    }
    reserve = round_up(reserve, 2 * page_bytes);
    void *start = MAP_FAILED;
    while (reserve >= LEAST_RESERVE_BYTES) {
        start = mmap(NULL, reserve, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (start != MAP_FAILED) break;
        reserve /= 2;
    }
    initialised = 1;
    if (start == MAP_FAILED) {
        mode = MODE_DISABLED;
        return;
    }
    region_start = (uintptr_t)start;
    region_end = region_start + reserve;
    plan_start = region_start;
    plan_limit = reserve / 2;
    fallback_start = region_start + reserve / 2;
    free_extents[0].start = fallback_start;
    free_extents[0].length = region_end - fallback_start;
    extent_count = 1;
    stats.reserved_bytes = reserve;
}

/* First fit in the fallback range; 0 when it is exhausted. */
static uintptr_t take_extent(size_t length) {
    for (size_t i = 0; i < extent_count; i++) {
        if (free_extents[i].length < length) continue;
        uintptr_t start = free_extents[i].start;
        free_extents[i].start += length;
        free_extents[i].length -= length;
        if (free_extents[i].length == 0) {
            memmove(&free_extents[i], &free_extents[i + 1],
                    (extent_count - i - 1) * sizeof(struct extent));
            extent_count--;
        }
        return start;
    }
    return 0;
}

/* Back into the sorted free list, merged with its neighbours. 0 if the list is full. */
static int give_extent(uintptr_t start, size_t length) {
    size_t low = 0, high = extent_count;
    while (low < high) {
        size_t middle = (low + high) / 2;
        if (free_extents[middle].start < start) low = middle + 1;
        else high = middle;
    }
    int joins_left = low > 0 && free_extents[low - 1].start + free_extents[low - 1].length == start;
    int joins_right = low < extent_count && start + length == free_extents[low].start;
    if (joins_left && joins_right) {
        free_extents[low - 1].length += length + free_extents[low].length;
        memmove(&free_extents[low], &free_extents[low + 1],
                (extent_count - low - 1) * sizeof(struct extent));
        extent_count--;
    } else if (joins_left) {
        free_extents[low - 1].length += length;
    } else if (joins_right) {
        free_extents[low].start = start;
        free_extents[low].length += length;
    } else {
        if (extent_count == MAX_EXTENTS) return 0;
        memmove(&free_extents[low + 1], &free_extents[low],
                (extent_count - low) * sizeof(struct extent));
        free_extents[low].start = start;
        free_extents[low].length = length;
        extent_count++;
    }
    return 1;
}

static void *fallback_alloc(size_t size, uint32_t recorded) {
    size_t span = round_up(size + HEADER_BYTES, page_bytes);
    uintptr_t start = take_extent(span);
    if (start == 0) return NULL;
    struct header *header = (struct header *)start;
    header->size = size;
    header->span = span;
    header->kind = KIND_FALLBACK;
    header->index = recorded;
    header->magic = MAGIC;
    stats.fallback_blocks++;
    stats.fallback_live_bytes += span;
    if (stats.fallback_live_bytes > stats.fallback_peak_bytes)
        stats.fallback_peak_bytes = stats.fallback_live_bytes;
    return (void *)(start + HEADER_BYTES);
}

static int overlaps_live(uintptr_t start, uintptr_t end) {
    for (size_t i = 0; i < live_count; i++)
        if (start < live[i].end && live[i].start < end) return 1;
    return 0;
}

static void *planned_alloc(size_t index, size_t size) {
    uintptr_t start = plan_start + planned_offset[index];
    size_t span = round_up(size + HEADER_BYTES, ALIGN_BYTES);
    if (live_count == MAX_LIVE || overlaps_live(start, start + span)) {
        stats.overlaps++;
        return NULL;
    }
    struct header *header = (struct header *)start;
    header->size = size;
    header->span = span;
    header->kind = KIND_PLANNED;
    header->index = (uint32_t)live_count;
    header->magic = MAGIC;
    live[live_count].start = start;
    live[live_count].end = start + span;
    live[live_count].header = header;
    live_count++;
    stats.hits++;
    return (void *)(start + HEADER_BYTES);
}

/* The plan's pages go back to the kernel, but for live blocks': a new plan is coming, and the
 * recording step's blocks are mapped elsewhere meanwhile. */
static void release_plan(void) {
    for (size_t i = 1; i < live_count; i++) {
        struct live_block value = live[i];
        size_t j = i;
        while (j > 0 && live[j - 1].start > value.start) {
            live[j] = live[j - 1];
            j--;
        }
        live[j] = value;
    }
    uintptr_t from = plan_start, limit = plan_start + stats.planned_bytes;
    for (size_t i = 0; i <= live_count; i++) {
        uintptr_t to = i < live_count ? live[i].start : limit;
        if (i < live_count) live[i].header->index = (uint32_t)i;
        uintptr_t first = round_up(from, page_bytes), last = to / page_bytes * page_bytes;
        if (last > first) madvise((void *)first, last - first, MADV_DONTNEED);
        if (i < live_count && live[i].end > from) from = live[i].end;
    }
}

static int is_owner(void) { return owner_set && pthread_equal(owner, pthread_self()); }

static void *large_alloc(size_t size) {
    void *result = NULL;
    if (size > SIZE_MAX / 2) return __libc_memalign(ALIGN_BYTES, size);
    pthread_mutex_lock(&lock);
    if (!initialised) initialise();
    if (mode == MODE_DISABLED) {
        pthread_mutex_unlock(&lock);
        return __libc_memalign(ALIGN_BYTES, size);
    }
    uint32_t recorded = 0;
    if (is_owner() && mode == MODE_REPLAY) {
        size_t index = cursor++;
        if (step_mismatches == 0 && index < recorded_count && recorded_size[index] == size) {
            if (planned_offset[index] != NOT_PLANNED) result = planned_alloc(index, size);
        } else {
            /* Once the step has left the record, a block of the recorded size may be another
             * tensor with another lifetime: nothing more of this step goes into the plan. */
            if (step_mismatches == 0) release_plan();
            stats.mismatches++;
            step_mismatches++;
        }
    } else if (is_owner() && mode == MODE_RECORD) {
        if (recorded_count < MAX_RECORDED) {
            recorded_size[recorded_count] = size;
            recorded_alloc[recorded_count] = clock_ticks++;
            recorded_free[recorded_count] = UINT64_MAX;
            recorded = (uint32_t)(++recorded_count);
        } else {
            record_overflowed = 1;
        }
    }
    if (result == NULL) result = fallback_alloc(size, recorded);
    pthread_mutex_unlock(&lock);
    return result != NULL ? result : __libc_memalign(ALIGN_BYTES, size);
}

static void large_free(void *pointer) {
    struct header *header = (struct header *)((uintptr_t)pointer - HEADER_BYTES);
    pthread_mutex_lock(&lock);
    if (header->kind == KIND_PLANNED) {
        size_t slot = header->index;
        uintptr_t start = live[slot].start, end = live[slot].end;
        live_count--;
        if (slot != live_count) {
            live[slot] = live[live_count];
            live[slot].header->index = (uint32_t)slot;
        }
        /* Off the plan (this step left the record, or a new one is being recorded) a freed
         * block's pages go back at once, as a fallback block's do: the rest of the step is
         * mapped elsewhere, and the plan's pages must not be held beside it. Only whole pages
         * inside the block: the edges may be a neighbour's. */
        if (mode != MODE_REPLAY || step_mismatches > 0) {
            uintptr_t first = round_up(start, page_bytes), last = end / page_bytes * page_bytes;
            if (last > first) madvise((void *)first, last - first, MADV_DONTNEED);
        }
    } else {
        if (mode == MODE_RECORD && header->index != 0 && header->index <= recorded_count)
            recorded_free[header->index - 1] = clock_ticks++;
        uintptr_t start = (uintptr_t)header;
        size_t span = header->span;
        stats.fallback_live_bytes -= span;
        madvise((void *)start, span, MADV_DONTNEED);
        /* With the free list full the range stays reserved, its pages returned all the same. */
        (void)give_extent(start, span);
    }
    pthread_mutex_unlock(&lock);
}

/* Greedy by size (largest first, lowest offset that no block alive at the same time holds):
 * within a few percent of the live peak on networks' allocation patterns. Scratch memory is
 * mapped, not malloc'd: the caller holds the lock that malloc would take. */
static int plan(void) {
    size_t count = recorded_count;
    size_t scratch_bytes = round_up(count * 2 * sizeof(size_t) + sizeof(size_t), page_bytes);
    size_t *order = mmap(NULL, scratch_bytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (order == MAP_FAILED) return 0;
    size_t *neighbours = order + count;
    size_t planned = 0, extent = 0;
    for (size_t i = 0; i < count; i++) {
        planned_offset[i] = NOT_PLANNED;
        if (recorded_free[i] != UINT64_MAX) order[planned++] = i;
    }
    /* Insertion sort by size, descending (stable: earlier allocations first on ties). */
    for (size_t i = 1; i < planned; i++) {
        size_t value = order[i], j = i;
        while (j > 0 && recorded_size[order[j - 1]] < recorded_size[value]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = value;
    }
    for (size_t n = 0; n < planned; n++) {
        size_t block = order[n];
        size_t span = round_up(recorded_size[block] + HEADER_BYTES, ALIGN_BYTES);
        size_t found = 0;
        for (size_t m = 0; m < n; m++) {
            size_t other = order[m];
            if (recorded_alloc[other] < recorded_free[block] &&
                recorded_alloc[block] < recorded_free[other])
                neighbours[found++] = other;
        }
        /* Neighbours by offset, ascending. */
        for (size_t i = 1; i < found; i++) {
            size_t value = neighbours[i], j = i;
            while (j > 0 && planned_offset[neighbours[j - 1]] > planned_offset[value]) {
                neighbours[j] = neighbours[j - 1];
                j--;
            }
            neighbours[j] = value;
        }
        uint64_t offset = 0;
        for (size_t i = 0; i < found; i++) {
            size_t other = neighbours[i];
            uint64_t other_end =
                planned_offset[other] + round_up(recorded_size[other] + HEADER_BYTES, ALIGN_BYTES);
            if (planned_offset[other] >= offset + span) break;
            if (other_end > offset) offset = other_end;
        }
        planned_offset[block] = offset;
        if (offset + span > extent) extent = offset + span;
    }
    /* The planned blocks' live peak, swept over the record's clock (each tick is one event). */
    uint64_t live_now = 0, live_peak = 0;
    size_t sweep_bytes = round_up((size_t)clock_ticks * sizeof(int64_t) + 1, page_bytes);
    int64_t *change = mmap(NULL, sweep_bytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (change != MAP_FAILED) {
        for (size_t i = 0; i < count; i++) {
            if (planned_offset[i] == NOT_PLANNED) continue;
            int64_t span = (int64_t)round_up(recorded_size[i] + HEADER_BYTES, ALIGN_BYTES);
            change[recorded_alloc[i]] += span;
            change[recorded_free[i]] -= span;
        }
        for (uint64_t tick = 0; tick < clock_ticks; tick++) {
            live_now += (uint64_t)change[tick];
            if (live_now > live_peak) live_peak = live_now;
        }
        munmap(change, sweep_bytes);
    }
    stats.planned_live_bytes = live_peak;
    munmap(order, scratch_bytes);
    if (extent > plan_limit) {
        for (size_t i = 0; i < count; i++) planned_offset[i] = NOT_PLANNED;
        return 0;
    }
    planned_count = planned;
    stats.planned_bytes = extent;
    stats.planned_blocks = planned;
    return 1;
}

static void start_recording(void) {
    release_plan();
    mode = MODE_RECORD;
    recorded_count = 0;
    record_overflowed = 0;
    clock_ticks = 0;
    stats.steps_recorded++;
}

/* The training thread, before a step: its large blocks are recorded or replayed. */
void edgefleet_arena_step_begin(void) {
    pthread_mutex_lock(&lock);
    if (!initialised) initialise();
    if (mode != MODE_DISABLED) {
        owner = pthread_self();
        owner_set = 1;
        if (mode == MODE_OFF) {
            start_recording();
        } else {
            cursor = 0;
            step_mismatches = 0;
        }
    }
    pthread_mutex_unlock(&lock);
}

/* After the step: plan what was recorded, or judge the replay. Blocks allocated between steps
 * (uploads, evaluation, other threads) are never planned. */
void edgefleet_arena_step_end(void) {
    pthread_mutex_lock(&lock);
    owner_set = 0;
    if (mode == MODE_RECORD) {
        mode = !record_overflowed && plan() ? MODE_REPLAY : MODE_OFF;
    } else if (mode == MODE_REPLAY) {
        stats.steps_replayed++;
        if (step_mismatches > 0 || cursor != recorded_count) mode = MODE_OFF;
    }
    pthread_mutex_unlock(&lock);
}

void edgefleet_arena_stats(struct edgefleet_arena_stats *out) {
    pthread_mutex_lock(&lock);
    *out = stats;
    out->mode = (uint64_t)mode;
    pthread_mutex_unlock(&lock);
}

void *malloc(size_t size) {
    return size >= LARGE_BYTES ? large_alloc(size) : __libc_malloc(size);
}

void free(void *pointer) {
    if (pointer == NULL) return;
    if (ours(pointer)) large_free(pointer);
    else __libc_free(pointer);
}

void *realloc(void *pointer, size_t size) {
    if (pointer == NULL) return malloc(size);
    if (!ours(pointer)) return __libc_realloc(pointer, size);
    if (size == 0) {
        free(pointer);
        return NULL;
    }
    struct header *header = (struct header *)((uintptr_t)pointer - HEADER_BYTES);
    if (size <= header->size) return pointer;
    void *moved = malloc(size);
    if (moved == NULL) return NULL;
    memcpy(moved, pointer, header->size);
    free(pointer);
    return moved;
}

void *reallocarray(void *pointer, size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(pointer, total);
}

static void *aligned(size_t alignment, size_t size) {
    if (size >= LARGE_BYTES && alignment <= ALIGN_BYTES) return large_alloc(size);
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
    void *pointer = aligned(alignment, size);
    if (pointer == NULL) return ENOMEM;
    *result = pointer;
    return 0;
}

void *aligned_alloc(size_t alignment, size_t size) { return aligned(alignment, size); }

void *memalign(size_t alignment, size_t size) { return aligned(alignment, size); }

size_t malloc_usable_size(void *pointer) {
    if (pointer == NULL) return 0;
    if (ours(pointer)) return ((struct header *)((uintptr_t)pointer - HEADER_BYTES))->size;
    static size_t (*glibc_usable)(void *);
    if (glibc_usable == NULL) glibc_usable = (size_t(*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
    return glibc_usable != NULL ? glibc_usable(pointer) : 0;
}
