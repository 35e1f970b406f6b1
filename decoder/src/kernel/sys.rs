//! Every `unsafe` operation of the crate, each behind a safe function: the perf syscalls
//! and ioctls, the ring buffer's shared memory and epoll (registering a user_events tracepoint is
//! `ue-wire`'s).
//!
//! The ring is the subtle part. The kernel writes records into the data area and then
//! publishes them by advancing `data_head`; we read `data_head` with Acquire, read the bytes
//! between `data_tail` and `data_head`, and give them back by storing `data_tail` with
//! Release. [`RingMemory::window`] hands out only bytes of that published, unconsumed range,
//! and [`Window::commit`] consumes the window, so no slice outlives the store that lets the
//! kernel overwrite it.

use std::ffi::{c_int, c_ulong};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use perf_event_open_sys::bindings::{PERF_FLAG_FD_CLOEXEC, perf_event_attr, perf_event_mmap_page};
use perf_event_open_sys::{self as pe};

/// The size of a memory page.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `perf_event_open(attr, pid = -1, cpu, group_fd = -1, PERF_FLAG_FD_CLOEXEC)`.
pub(crate) fn perf_event_open(attr: &perf_event_attr, cpu: u32) -> io::Result<OwnedFd> {
    // The kernel may write the size it expects back into the attr, so it gets a copy, and
    // the size is ours so the kernel reads no further than the struct.
    let mut attr = *attr;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    let cpu = c_int::try_from(cpu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `attr` is an initialised plain-data perf_event_attr whose `size` is its own,
    // living across the call. A perf event writes into no memory of ours: samples go to a
    // ring buffer only once one is mmap'd (`RingMemory::map`).
    let fd =
        unsafe { pe::perf_event_open(&mut attr, -1, cpu, -1, c_ulong::from(PERF_FLAG_FD_CLOEXEC)) };
    let fd = check(fd)?;
    // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ioctl(PERF_EVENT_IOC_ENABLE)`.
pub(crate) fn perf_enable(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: ENABLE takes an integer argument and the descriptor is open for the call.
    check(unsafe { pe::ioctls::ENABLE(fd.as_raw_fd(), 0) }).map(drop)
}

/// `ioctl(PERF_EVENT_IOC_SET_OUTPUT)`: send `fd`'s records to `target`'s ring buffer.
pub(crate) fn perf_set_output(fd: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: SET_OUTPUT takes a descriptor argument; both descriptors are open for the call.
    check(unsafe { pe::ioctls::SET_OUTPUT(fd.as_raw_fd(), target.as_raw_fd()) }).map(drop)
}

/// `ioctl(PERF_EVENT_IOC_ID)`: the id that `PERF_SAMPLE_IDENTIFIER` reports for `fd`.
pub(crate) fn perf_event_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut id = 0u64;
    // SAFETY: ID writes one u64 through the pointer, which points at a live local.
    check(unsafe { pe::ioctls::ID(fd.as_raw_fd(), &mut id) })?;
    Ok(id)
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: an exclusive advisory lock held until the descriptor
/// closes (the process ends, killed or not); `WouldBlock` if another process holds it.
pub(crate) fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: flock takes a descriptor, open for the call, and flags; it touches no memory.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }).map(drop)
}

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    /// A new epoll instance, closed on exec.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes only flags.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for readability.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open and `event` is a valid epoll_event that the
        // kernel only reads during the call.
        check(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        })
        .map(drop)
    }

    /// Waits up to `timeout` for a watched descriptor to become readable and returns how
    /// many are. An interrupted wait (EINTR) returns 0.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<usize> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
        let ms = c_int::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(c_int::MAX);
        // SAFETY: the buffer holds `events.len()` writable epoll_events for the call.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as c_int,
                ms,
            )
        };
        match check(n) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug)]
enum Backing {
    /// Mapped from a perf event with mmap; unmapped on drop.
    Mmap { len: usize },
    /// Allocated in memory to stand in for the kernel in tests.
    #[cfg(any(test, feature = "fuzzing"))]
    Heap { layout: std::alloc::Layout },
}

/// A perf ring buffer: the `perf_event_mmap_page` control page and the data area after it,
/// mapped from the kernel or, in tests, allocated in memory and written by the test.
#[derive(Debug)]
pub(crate) struct RingMemory {
    page: NonNull<perf_event_mmap_page>,
    data: NonNull<u8>,
    /// A power of two.
    data_size: usize,
    backing: Backing,
}

// SAFETY: RingMemory owns its mapping or allocation outright; the raw pointers are only
// dereferenced through its methods, and the shared head and tail are accessed atomically.
unsafe impl Send for RingMemory {}

impl RingMemory {
    /// Maps the ring buffer of perf event `fd`: one control page and `data_pages` pages
    /// of data (a power of two).
    pub(crate) fn map(fd: BorrowedFd<'_>, data_pages: usize) -> io::Result<Self> {
        let page = page_size();
        let len = data_pages
            .checked_add(1)
            .and_then(|n| n.checked_mul(page))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a new shared mapping at an address of the kernel's choice replaces no
        // existing memory; the descriptor is open for the call.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let page_ptr = addr.cast::<perf_event_mmap_page>();
        // SAFETY: the mapping starts with the kernel's page-aligned perf_event_mmap_page;
        // data_offset and data_size are set once before mmap returns and never change.
        let (offset, size) = unsafe {
            (
                ptr::read_volatile(ptr::addr_of!((*page_ptr).data_offset)),
                ptr::read_volatile(ptr::addr_of!((*page_ptr).data_size)),
            )
        };
        // Kernels before 4.1 leave both at 0; their data area is the rest of the mapping.
        let (offset, size) = if size == 0 {
            (page, len - page)
        } else {
            (offset as usize, size as usize)
        };
        let fits = offset.checked_add(size).is_some_and(|end| end <= len);
        if !fits || !size.is_power_of_two() || offset == 0 {
            // SAFETY: addr/len are exactly the mapping made above, not yet shared.
            unsafe { libc::munmap(addr, len) };
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("perf ring with data_offset {offset} and data_size {size} in {len} bytes"),
            ));
        }
        Ok(Self {
            page: NonNull::new(page_ptr).expect("mmap does not return null on success"),
            // SAFETY: offset < len was checked above, so the pointer stays in the mapping.
            data: NonNull::new(unsafe { addr.cast::<u8>().add(offset) })
                .expect("an offset into a mapping is not null"),
            data_size: size,
            backing: Backing::Mmap { len },
        })
    }

    /// An in-memory ring with `data_size` bytes of data (a power of two), zeroed, laid out
    /// like the kernel's: a page-aligned control page, then the data at `data_offset`.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn in_memory(data_size: usize) -> Self {
        assert!(data_size.is_power_of_two());
        let page = page_size();
        let layout =
            std::alloc::Layout::from_size_align(page + data_size, page).expect("small layout");
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(base).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let page_ptr = base.cast::<perf_event_mmap_page>();
        assert!(std::mem::size_of::<perf_event_mmap_page>() <= page);
        // SAFETY: the allocation is page-aligned and at least one page long, so it holds a
        // perf_event_mmap_page; nothing else refers to it yet.
        unsafe {
            (*page_ptr.as_ptr()).data_offset = page as u64;
            (*page_ptr.as_ptr()).data_size = data_size as u64;
        }
        Self {
            page: page_ptr,
            // SAFETY: `page` < the allocation's size.
            data: unsafe { base.add(page) },
            data_size,
            backing: Backing::Heap { layout },
        }
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: data_head is an aligned u64 inside the control page, which lives as long
        // as `self`. The kernel writes it concurrently, so it is only accessed atomically.
        unsafe { AtomicU64::from_ptr(ptr::addr_of_mut!((*self.page.as_ptr()).data_head)) }
    }

    fn tail(&self) -> &AtomicU64 {
        // SAFETY: as for `head`: data_tail is an aligned u64 of the live control page that
        // the kernel reads concurrently, so it is only accessed atomically.
        unsafe { AtomicU64::from_ptr(ptr::addr_of_mut!((*self.page.as_ptr()).data_tail)) }
    }

    /// The records the kernel has published and we have not consumed yet. `&mut self`
    /// makes this the only consumer.
    pub(crate) fn window(&mut self) -> Window<'_> {
        // Acquire pairs with the kernel's release of data_head: the record bytes before
        // the head are visible once we see the head.
        let head = self.head().load(Ordering::Acquire);
        // Only we write data_tail.
        let tail = self.tail().load(Ordering::Relaxed);
        Window {
            ring: self,
            tail,
            head,
        }
    }

    /// Test stand-in for the kernel: writes `bytes` at ring position `pos`, wrapping. The
    /// kernel's positions are free-running u64s that wrap past `u64::MAX`, so these do too.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn kernel_write(&mut self, pos: u64, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let at = (pos.wrapping_add(i as u64) as usize) & (self.data_size - 1);
            // SAFETY: `at` < data_size, inside the allocation; `&mut self` excludes readers.
            unsafe { self.data.add(at).write(b) };
        }
    }

    /// Test stand-in for the kernel: publishes records up to `head`.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn kernel_publish(&mut self, head: u64) {
        self.head().store(head, Ordering::Release);
    }

    /// Test stand-in for the kernel: the tail the reader gave back.
    #[cfg(test)]
    pub(crate) fn kernel_tail(&self) -> u64 {
        self.tail().load(Ordering::Acquire)
    }

    /// Test setup: starts an empty ring at `pos` (head = tail = pos), to place records
    /// across the end of the data area.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn kernel_reset(&mut self, pos: u64) {
        self.head().store(pos, Ordering::Relaxed);
        self.tail().store(pos, Ordering::Relaxed);
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        match self.backing {
            Backing::Mmap { len } => {
                // SAFETY: page/len are exactly the mapping made in `map`; no slice of it
                // outlives `self` because windows borrow `self`.
                unsafe { libc::munmap(self.page.as_ptr().cast(), len) };
            }
            #[cfg(any(test, feature = "fuzzing"))]
            Backing::Heap { layout } => {
                // SAFETY: allocated in `in_memory` with this very layout.
                unsafe { std::alloc::dealloc(self.page.as_ptr().cast(), layout) };
            }
        }
    }
}

/// The published, unconsumed bytes of a ring: positions `tail..head`. Positions are the
/// kernel's free-running byte counters; the data lives at `position % data_size`.
#[derive(Debug)]
pub(crate) struct Window<'a> {
    ring: &'a mut RingMemory,
    tail: u64,
    head: u64,
}

impl Window<'_> {
    /// The position of the first unconsumed byte.
    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    /// The position after the last published byte.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// Size of the ring's data area.
    pub(crate) fn data_size(&self) -> usize {
        self.ring.data_size
    }

    /// Bytes published and not consumed. More than the data size means the head or tail
    /// is corrupt.
    pub(crate) fn available(&self) -> u64 {
        self.head.wrapping_sub(self.tail)
    }

    /// The `len` bytes at position `pos` as one or two slices (two when they wrap around
    /// the end of the data area), or `None` unless they lie inside `tail..head` and the
    /// window is not corrupt.
    pub(crate) fn get(&self, pos: u64, len: usize) -> Option<(&[u8], &[u8])> {
        let size = self.ring.data_size;
        let from_tail = pos.wrapping_sub(self.tail);
        let end = from_tail.checked_add(len as u64)?;
        if self.available() > size as u64 || end > self.available() {
            return None;
        }
        let start = (pos as usize) & (size - 1);
        let first = len.min(size - start);
        // SAFETY: start + first <= data_size and len - first <= start, so both ranges lie
        // in the data area. They lie inside tail..head (checked above), which the kernel
        // has published (Acquire load in `window`) and will not write again until the tail
        // moves past them, which only `commit` does, consuming this window and so ending
        // the borrow of the slices returned here.
        unsafe {
            Some((
                std::slice::from_raw_parts(self.ring.data.as_ptr().add(start), first),
                std::slice::from_raw_parts(self.ring.data.as_ptr(), len - first),
            ))
        }
    }

    /// Gives the bytes before `new_tail` back to the kernel (Release: our reads of them
    /// happen before the kernel may overwrite them). `new_tail` is clamped to `tail..=head`.
    pub(crate) fn commit(self, new_tail: u64) {
        let advance = new_tail.wrapping_sub(self.tail).min(self.available());
        self.ring
            .tail()
            .store(self.tail.wrapping_add(advance), Ordering::Release);
    }
}
