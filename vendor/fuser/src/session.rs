//! Filesystem session
//!
//! A session runs a filesystem implementation while it is being mounted to a specific mount
//! point. A session begins by mounting the filesystem and ends by unmounting it. While the
//! filesystem is mounted, the session loop receives, dispatches and replies to kernel requests
//! for filesystem operations under its mount point.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::thread::{self};

use log::debug;
use log::error;
use log::info;
use log::warn;
use nix::unistd::Uid;
use nix::unistd::geteuid;
use parking_lot::Mutex;

use crate::Errno;
use crate::Filesystem;
use crate::KernelConfig;
use crate::MountOption;
use crate::ReplyEmpty;
use crate::Request;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::dev_fuse::DevFuse;
use crate::ll;
use crate::ll::Operation;
use crate::ll::ResponseErrno;
use crate::ll::Version;
use crate::ll::flags::init_flags::InitFlags;
use crate::ll::fuse_abi as abi;
use crate::mnt::Mount;
use crate::mnt::mount_options::Config;
use crate::mnt::mount_options::check_option_conflicts;
use crate::notify::Notifier;
use crate::read_buf::FuseReadBuf;
use crate::readers::Readers;
use crate::reply::Reply;
use crate::reply::ReplyRaw;
use crate::reply::ReplySender;
use crate::request::RequestWithSender;
use crate::uring::Queue;
use crate::uring::UringParams;

/// The max size of write requests from the kernel. The absolute minimum is 4k,
/// FUSE recommends at least 128k, max 16M. The FUSE default is 16M on macOS
/// and 128k on other systems.
pub(crate) const MAX_WRITE_SIZE: usize = 16 * 1024 * 1024;

#[derive(Default, Debug, Eq, PartialEq, Clone, Copy)]
/// How requests should be filtered based on the calling UID.
pub enum SessionACL {
    /// Allow requests from any user. Corresponds to the `allow_other` mount option.
    All,
    /// Allow requests from root. Corresponds to the `allow_root` mount option.
    RootAndOwner,
    /// Allow requests from the owning UID. This is FUSE's default mode of operation.
    #[default]
    Owner,
}

impl SessionACL {
    /// Returns the mount option string for kernel/fusermount/libfuse paths.
    /// Both `All` and `RootAndOwner` map to `allow_other` - the kernel only
    /// understands `allow_other`, and fuser enforces the root-only restriction internally.
    #[allow(dead_code)]
    pub(crate) fn to_mount_option(self) -> Option<&'static str> {
        match self {
            SessionACL::All | SessionACL::RootAndOwner => Some("allow_other"),
            SessionACL::Owner => None,
        }
    }
}

/// Calls `destroy` on drop.
#[derive(Debug)]
pub(crate) struct FilesystemHolder<FS: Filesystem> {
    pub(crate) fs: Option<FS>,
}

impl<FS: Filesystem> FilesystemHolder<FS> {
    fn destroy(&mut self) {
        if let Some(mut fs) = self.fs.take() {
            fs.destroy();
        }
    }
}

impl<FS: Filesystem> Drop for FilesystemHolder<FS> {
    fn drop(&mut self) {
        self.destroy();
    }
}

#[derive(Debug)]
struct UmountOnDrop {
    mount: Arc<Mutex<Option<Mount>>>,
}

impl UmountOnDrop {
    fn umount(&self) -> io::Result<()> {
        if let Some(mount) = self.mount.lock().take() {
            mount.umount()?;
        }
        Ok(())
    }
}

impl Drop for UmountOnDrop {
    fn drop(&mut self) {
        match self.umount() {
            // zarrfs: the usual end, the filesystem was unmounted already
            // (which is what ended the session); zarrfs logs fuser's
            // warnings, so this one would show after every umount.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => warn!("Failed to umount filesystem: {}", e),
            Ok(()) => {}
        }
    }
}

/// The session data structure
#[derive(Debug)]
pub struct Session<FS: Filesystem> {
    /// Filesystem operation implementations. None after `destroy` called.
    pub(crate) filesystem: FilesystemHolder<FS>,
    /// Communication channel to the kernel driver
    pub(crate) ch: Channel,
    /// Handle to the mount.  Dropping this unmounts.
    mount: UmountOnDrop,
    /// Whether to restrict access to owner, root + owner, or unrestricted
    /// Used to implement `allow_root` and `auto_unmount`
    pub(crate) allowed: SessionACL,
    /// User that launched the fuser process
    pub(crate) session_owner: Uid,
    /// FUSE protocol version, as reported by the kernel.
    /// The field is set to `Some` when the init message is received.
    pub(crate) proto_version: Option<Version>,
    pub(crate) config: Config,
    /// zarrfs: set when FUSE_INIT agreed on io_uring queues (uring.rs).
    pub(crate) uring: Option<UringParams>,
}

impl<FS: Filesystem> AsFd for Session<FS> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ch.as_fd()
    }
}

impl<FS: Filesystem> Session<FS> {
    /// Create a new session by mounting the given filesystem to the given mountpoint
    /// # Errors
    /// Returns an error if the options are incorrect, or if the fuse device can't be mounted.
    pub fn new<P: AsRef<Path>>(
        filesystem: FS,
        mountpoint: P,
        options: &Config,
    ) -> io::Result<Session<FS>> {
        check_option_conflicts(options)?;

        let mountpoint = mountpoint.as_ref();
        info!("Mounting {}", mountpoint.display());
        // If AutoUnmount is requested, but not AllowRoot or AllowOther, return an error
        // because fusermount needs allow_root or allow_other to handle the auto_unmount option
        if options.mount_options.contains(&MountOption::AutoUnmount)
            && options.acl == SessionACL::Owner
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("auto_unmount requires acl != Owner, got: {:?}", options.acl),
            ));
        }
        let (file, mount) = Mount::new(mountpoint, &options.mount_options, options.acl)?;

        let ch = Channel::new(file);

        let mut session = Session {
            filesystem: FilesystemHolder {
                fs: Some(filesystem),
            },
            ch,
            mount: UmountOnDrop {
                mount: Arc::new(Mutex::new(Some(mount))),
            },
            allowed: options.acl,
            session_owner: geteuid(),
            proto_version: None,
            config: options.clone(),
            uring: None,
        };

        session.handshake()?;

        Ok(session)
    }

    /// Wrap an existing /dev/fuse file descriptor. This doesn't mount the
    /// filesystem anywhere; that must be done separately.
    pub fn from_fd(
        filesystem: FS,
        fd: OwnedFd,
        acl: SessionACL,
        config: Config,
    ) -> io::Result<Self> {
        let ch = Channel::new(Arc::new(DevFuse(File::from(fd))));
        let mut session = Session {
            filesystem: FilesystemHolder {
                fs: Some(filesystem),
            },
            ch,
            mount: UmountOnDrop {
                mount: Arc::new(Mutex::new(None)),
            },
            allowed: acl,
            session_owner: geteuid(),
            proto_version: None,
            config,
            uring: None,
        };

        session.handshake()?;

        Ok(session)
    }

    /// Run the session loop in a background thread. If the returned handle is dropped,
    /// the filesystem is unmounted and the given session ends.
    pub fn spawn(self) -> io::Result<BackgroundSession> {
        let sender = self.ch.sender();
        // Take the fuse_session, so that we can unmount it
        let mount = std::mem::take(&mut *self.mount.mount.lock());
        let guard = thread::Builder::new()
            .name("fuser-bg".to_string())
            .spawn(move || self.run())?;
        Ok(BackgroundSession {
            guard,
            sender,
            mount,
        })
    }

    /// Run the session loop that receives kernel requests and dispatches them to method
    /// calls into the filesystem. This read-dispatch-loop is non-concurrent to prevent
    /// having multiple buffers (which take up much memory), but the filesystem methods
    /// may run concurrent by spawning threads.
    /// # Errors
    /// Returns any final error when the session comes to an end.
    pub fn run(self) -> io::Result<()> {
        let Session {
            filesystem,
            ch,
            mount: _do_not_umount_yet,
            allowed,
            session_owner,
            proto_version: _,
            config,
            uring,
        } = self;

        let n_threads = config.n_threads.unwrap_or(1);
        if let Some(params) = uring {
            return run_over_uring(filesystem, ch, allowed, session_owner, n_threads, params);
        }

        if !cfg!(target_os = "linux") && n_threads != 1 {
            // TODO: check whether it works on macOS/FreeBSD and enable if it works.
            return Err(io::Error::other(
                "n_threads != 1 is only supported on Linux",
            ));
        }

        let Some(n_threads_minus_one) = n_threads.checked_sub(1) else {
            return Err(io::Error::other("n_threads"));
        };

        let filesystem = Arc::new(filesystem);

        let mut channels = Vec::with_capacity(n_threads);

        for _ in 0..n_threads_minus_one {
            if config.clone_fd {
                #[cfg(target_os = "linux")]
                {
                    channels.push(ch.clone_fd()?);
                    continue;
                }
                #[cfg(not(target_os = "linux"))]
                {
                    return Err(io::Error::other("clone_fd is only supported on Linux"));
                }
            } else {
                channels.push(ch.clone());
            }
        }
        channels.push(ch);

        let mut threads = Vec::with_capacity(n_threads);

        // zarrfs: one reader at a time, spinning (see readers.rs).
        let readers = match config.spin {
            Some(spin) if cfg!(target_os = "linux") => {
                for ch in &channels {
                    ch.set_nonblocking()?;
                }
                Some(Arc::new(Readers::new(spin)))
            }
            _ => None,
        };
        let watchdog = match &readers {
            Some(readers) => {
                let readers = readers.clone();
                // Any of the cloned fds: they share the kernel's queue.
                let device = channels[0].clone();
                Some(
                    thread::Builder::new()
                        .name("fuser-watch".to_owned())
                        .spawn(move || readers.watch(|| device.has_requests()))?,
                )
            }
            None => None,
        };

        for (i, ch) in channels.into_iter().enumerate() {
            let thread_name = format!("fuser-{i}");
            let event_loop = SessionEventLoop {
                thread_name: thread_name.clone(),
                filesystem: filesystem.clone(),
                ch,
                allowed,
                session_owner,
                readers: readers.clone(),
            };
            threads.push(
                thread::Builder::new()
                    .name(thread_name)
                    .spawn(move || event_loop.event_loop())?,
            );
        }

        let joined: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
        if let Some(readers) = &readers {
            readers.finish();
        }
        if let Some(watchdog) = watchdog {
            let _ = watchdog.join();
        }
        let reply = first_error(Ok(()), joined, "event loop")?;
        destroy_filesystem(filesystem)?;
        reply
    }

    fn handshake(&mut self) -> io::Result<()> {
        let mut buf = FuseReadBuf::new();
        let buf = buf.as_mut();

        loop {
            // Read the init request from the kernel
            let size = match self.ch.receive_retrying(buf) {
                Ok(size) => size,
                Err(nix::errno::Errno::ENODEV) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "FUSE device disconnected during handshake",
                    ));
                }
                Err(err) => return Err(err.into()),
            };

            // Parse the request
            let request = match ll::AnyRequest::try_from(&buf[..size]) {
                Ok(request) => request,
                Err(err) => {
                    error!("{err}");
                    return Err(io::Error::new(io::ErrorKind::InvalidData, err.to_string()));
                }
            };

            // Extract the init operation
            let op = match request.operation() {
                Ok(op) => op,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "Failed to parse FUSE operation",
                    ));
                }
            };

            let init = match op {
                ll::Operation::Init(init) => init,
                _ => {
                    error!("Received non-init FUSE operation before init: {}", request);
                    // Send error response and return error - non-init during handshake is invalid
                    <ReplyRaw as Reply>::new(
                        request.unique(),
                        ReplySender::Channel(self.ch.sender()),
                    )
                    .send_ll(&ResponseErrno(ll::Errno::EIO));
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "Received non-init FUSE operation during handshake",
                    ));
                }
            };

            let v = init.version();
            if v.0 > abi::FUSE_KERNEL_VERSION {
                // Kernel has a newer major version than we support.
                // Send our version and wait for a second INIT request with a compatible version.
                debug!(
                    "INIT: Kernel version {} > our version {}, sending our version and waiting for next init",
                    v.0,
                    abi::FUSE_KERNEL_VERSION
                );
                let response = init.reply_version_only();
                <ReplyRaw as Reply>::new(request.unique(), ReplySender::Channel(self.ch.sender()))
                    .send_ll(&response);
                continue;
            }

            // We don't support ABI versions before 7.6
            if v < Version(7, 6) {
                error!("Unsupported FUSE ABI version {v}");
                <ReplyRaw as Reply>::new(request.unique(), ReplySender::Channel(self.ch.sender()))
                    .send_ll(&ResponseErrno(ll::Errno::EPROTO));
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("Unsupported FUSE ABI version {v}"),
                ));
            }

            let mut config = KernelConfig::new(init.capabilities(), init.max_readahead(), v);

            // Call filesystem init method and give it a chance to return an error
            let Some(filesystem) = &mut self.filesystem.fs else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "Bug: filesystem must be initialized during handshake",
                ));
            };
            let res = filesystem.init(Request::ref_cast(request.header()), &mut config);
            if let Err(error) = res {
                let errno = Errno::from_i32(error.raw_os_error().unwrap_or(0));
                <ReplyRaw as Reply>::new(request.unique(), ReplySender::Channel(self.ch.sender()))
                    .send_ll(&ResponseErrno(errno));
                return Err(error);
            }

            // Remember the ABI version supported by kernel and mark the session initialized.
            self.proto_version = Some(v);

            // zarrfs: io_uring queues if asked for and offered.
            if self.config.io_uring
                && cfg!(target_os = "linux")
                && config
                    .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                    .is_ok()
            {
                let page = page_size::get();
                self.uring = Some(UringParams {
                    payload_size: (config.max_write as usize)
                        .max(usize::from(config.max_pages()) * page),
                });
            }

            // Log capability status for debugging
            for bit in 0..64 {
                let bitflags = InitFlags::from_bits_retain(1 << bit);
                if bitflags == InitFlags::FUSE_INIT_EXT {
                    continue;
                }
                let bitflag_is_known = InitFlags::all().contains(bitflags);
                let kernel_supports = init.capabilities().contains(bitflags);
                let we_requested = config.requested.contains(bitflags);
                // On macOS, there's a clash between linux and macOS constants,
                // so we pick macOS ones (last).
                let name = if let Some((name, _)) = bitflags.iter_names().last() {
                    Cow::Borrowed(name)
                } else {
                    Cow::Owned(format!("(1 << {bit})"))
                };
                if we_requested && kernel_supports {
                    debug!("capability {name} enabled")
                } else if we_requested {
                    debug!("capability {name} not supported by kernel")
                } else if kernel_supports {
                    debug!("capability {name} not requested by client")
                } else if bitflag_is_known {
                    debug!("capability {name} not supported nor requested")
                }
            }

            // Reply with our desired version and settings.
            debug!(
                "INIT response: ABI {}.{}, flags {:#x}, max readahead {}, max write {}",
                abi::FUSE_KERNEL_VERSION,
                abi::FUSE_KERNEL_MINOR_VERSION,
                init.capabilities() & config.requested,
                config.max_readahead,
                config.max_write
            );

            let response = init.reply(&config);
            <ReplyRaw as Reply>::new(request.unique(), ReplySender::Channel(self.ch.sender()))
                .send_ll(&response);

            return Ok(());
        }
    }

    /// Unmount the filesystem
    pub fn unmount(&mut self) -> io::Result<()> {
        self.mount.umount()
    }

    /// Returns a thread-safe object that can be used to unmount the Filesystem
    pub fn unmount_callable(&mut self) -> SessionUnmounter {
        SessionUnmounter {
            mount: self.mount.mount.clone(),
        }
    }

    /// Returns an object that can be used to send notifications to the kernel
    pub fn notifier(&self) -> Notifier {
        Notifier::new(self.ch.sender())
    }

    /// zarrfs: whether FUSE_INIT agreed on io_uring queues (`Config::io_uring`
    /// asked, the kernel offered), so that `run` serves requests over them.
    pub fn io_uring(&self) -> bool {
        self.uring.is_some()
    }
}

/// zarrfs: `Session::run` over io_uring queues (uring.rs): `n_threads`
/// threads per queue, a watchdog per queue, and `n_threads` threads
/// reading the device for what does not come over the rings (forgets,
/// interrupts).
fn run_over_uring<FS: Filesystem>(
    filesystem: FilesystemHolder<FS>,
    ch: Channel,
    allowed: SessionACL,
    session_owner: Uid,
    n_threads: usize,
    params: UringParams,
) -> io::Result<()> {
    let filesystem = Arc::new(filesystem);
    let event_loop = |name: String, ch: Channel| SessionEventLoop {
        thread_name: name,
        filesystem: filesystem.clone(),
        ch,
        allowed,
        session_owner,
        readers: None,
    };
    let n_threads = n_threads.max(1);
    let depth = u16::try_from(n_threads * 2).unwrap_or(u16::MAX);
    let mut queues = Vec::new();
    for qid in 0..crate::uring::queue_count() {
        let qid = u16::try_from(qid).map_err(|_| io::Error::other("too many CPUs"))?;
        let queue = Arc::new(Queue::new(qid, depth, params, ch.sender())?);
        queue.register()?;
        queues.push(queue);
    }
    let mut threads = Vec::new();
    let mut watchdogs = Vec::new();
    for queue in &queues {
        for i in 0..n_threads {
            let name = format!("fuser-q{}-{i}", queue.qid());
            let event_loop = event_loop(name.clone(), ch.clone());
            let queue = queue.clone();
            threads.push(
                thread::Builder::new()
                    .name(name)
                    .spawn(move || queue.serve(&event_loop))?,
            );
        }
        let queue = queue.clone();
        watchdogs.push(
            thread::Builder::new()
                .name(format!("fuser-q{}-watch", queue.qid()))
                .spawn(move || queue.readers.watch(|| false))?,
        );
    }
    // The device, until it is gone (unmounted): forgets and interrupts, and
    // everything if the kernel refused the rings after all (it then falls
    // back to the device), so with as many threads as the queues have,
    // each blocking in read(2) on its own fd as stock fuser's do.
    let mut device_threads = Vec::new();
    for i in 1..n_threads {
        let event_loop = event_loop(format!("fuser-dev-{i}"), ch.clone_fd()?);
        device_threads.push(
            thread::Builder::new()
                .name(format!("fuser-dev-{i}"))
                .spawn(move || event_loop.blocking_loop())?,
        );
    }
    let device = event_loop("fuser-dev-0".to_owned(), ch).blocking_loop();
    let device = first_error(
        device,
        device_threads.into_iter().map(|t| t.join()),
        "device",
    )?;
    for queue in &queues {
        queue.stop();
    }
    let result = first_error(
        device,
        threads.into_iter().map(|t| t.join()),
        "io_uring queue",
    )?;
    for queue in &queues {
        queue.readers.finish();
    }
    for watchdog in watchdogs {
        let _ = watchdog.join();
    }
    drop(queues);
    destroy_filesystem(filesystem)?;
    result
}

/// zarrfs: `so_far`, or else the first error of the joined session
/// threads; the outer error is a panic of one of them (`what` names them).
fn first_error(
    so_far: io::Result<()>,
    joined: impl IntoIterator<Item = thread::Result<io::Result<()>>>,
    what: &str,
) -> io::Result<io::Result<()>> {
    let mut result = so_far;
    for thread in joined {
        match thread {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if result.is_ok() {
                    result = Err(e);
                }
            }
            Err(_) => return Err(io::Error::other(format!("{what} thread panicked"))),
        }
    }
    Ok(result)
}

/// Call the filesystem's `destroy` once the session's threads are gone.
fn destroy_filesystem<FS: Filesystem>(mut filesystem: Arc<FilesystemHolder<FS>>) -> io::Result<()> {
    let Some(filesystem) = Arc::get_mut(&mut filesystem) else {
        return Err(io::Error::other(
            "BUG: must have one refcount for filesystem",
        ));
    };
    filesystem.destroy();
    Ok(())
}

#[derive(Debug)]
/// A thread-safe object that can be used to unmount a Filesystem
pub struct SessionUnmounter {
    mount: Arc<Mutex<Option<Mount>>>,
}

impl SessionUnmounter {
    /// Unmount the filesystem
    pub fn unmount(&mut self) -> io::Result<()> {
        if let Some(mount) = std::mem::take(&mut *self.mount.lock()) {
            mount.umount()?;
        }
        Ok(())
    }
}

pub(crate) struct SessionEventLoop<FS: Filesystem> {
    /// Cache thread name for faster `debug!`.
    pub(crate) thread_name: String,
    pub(crate) ch: Channel,
    pub(crate) filesystem: Arc<FilesystemHolder<FS>>,
    pub(crate) allowed: SessionACL,
    pub(crate) session_owner: Uid,
    /// zarrfs: set when one thread at a time reads (see readers.rs).
    pub(crate) readers: Option<Arc<Readers>>,
}

/// What a reader got from the device.
enum Received {
    /// A request of this size; `spun`: read while spinning after this
    /// thread's previous request, not after a wait in poll.
    Request { size: usize, spun: bool },
    /// Another thread reads; this one was asked to read again.
    Resumed,
    /// The device is gone, or the kernel asked the session to end.
    Gone,
}

impl<FS: Filesystem> SessionEventLoop<FS> {
    fn event_loop(&self) -> io::Result<()> {
        match self.readers.clone() {
            Some(readers) => {
                let result = self.reader_loop(&readers);
                // Whatever ended this thread ends the others.
                readers.finish();
                result
            }
            None => self.blocking_loop(),
        }
    }

    /// zarrfs: the loop of a thread when one thread at a time reads.
    fn reader_loop(&self, readers: &Readers) -> io::Result<()> {
        let mut buf = FuseReadBuf::new();
        let buf = buf.as_mut();
        if !readers.start() {
            return Ok(());
        }
        // Spin only right after a request of this thread's: a thread asked
        // to read because the others are busy would take CPU they need.
        let mut spin = std::time::Duration::ZERO;
        let mut follower = crate::follow::Follower::new();
        loop {
            let (size, spun) = match self.receive_spinning(readers, buf, spin)? {
                Received::Request { size, spun } => (size, spun),
                Received::Resumed => {
                    spin = std::time::Duration::ZERO;
                    continue;
                }
                Received::Gone => return Ok(()),
            };
            let Some(req) = RequestWithSender::new(self.ch.sender(), &buf[..size]) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "Invalid request",
                ));
            };
            if let Ok(Operation::Destroy(_)) = req.request.operation() {
                req.reply::<ReplyEmpty>().ok();
                return Ok(());
            }
            // Spinning for one client thread, be where it runs (follow.rs).
            follower.request(req.request.pid().as_raw() as u32, spun);
            crate::follow::serving(req.request.header().opcode);
            readers.got_request();
            req.dispatch(self);
            readers.done_request();
            spin = readers.spin();
        }
    }

    /// zarrfs: read the next request, non-blocking, for up to `spin`,
    /// then wait in poll(2) if no other thread reads.
    fn receive_spinning(
        &self,
        readers: &Readers,
        buf: &mut [u8],
        mut spin: std::time::Duration,
    ) -> io::Result<Received> {
        let started = std::time::Instant::now();
        loop {
            match self.ch.receive_nonblocking(buf) {
                Ok(Some(size)) => {
                    return Ok(Received::Request {
                        size,
                        spun: !spin.is_zero(),
                    });
                }
                Ok(None) => {}
                Err(nix::errno::Errno::ENODEV) => return Ok(Received::Gone),
                Err(err) => return Err(err.into()),
            }
            if started.elapsed() < spin {
                crate::follow::spinning();
                std::thread::yield_now();
                continue;
            }
            crate::follow::leave_idle();
            match readers.spin_ended() {
                Some(true) => return Ok(Received::Resumed),
                Some(false) => return Ok(Received::Gone),
                None => {
                    self.ch.wait_readable()?;
                    spin = std::time::Duration::ZERO;
                }
            }
        }
    }

    fn blocking_loop(&self) -> io::Result<()> {
        // Buffer for receiving requests from the kernel. Only one is allocated and
        // it is reused immediately after dispatching to conserve memory and allocations.
        let mut buf = FuseReadBuf::new();
        let buf = buf.as_mut();
        loop {
            // Read the next request from the given channel to kernel driver
            // The kernel driver makes sure that we get exactly one request per read
            match self.ch.receive_retrying(buf) {
                Ok(size) => match RequestWithSender::new(self.ch.sender(), &buf[..size]) {
                    // Dispatch request
                    Some(req) => {
                        if let Ok(Operation::Destroy(_)) = req.request.operation() {
                            req.reply::<ReplyEmpty>().ok();
                            return Ok(());
                        } else {
                            req.dispatch(self)
                        }
                    }
                    // Quit loop on illegal request
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "Invalid request",
                        ));
                    }
                },
                Err(nix::errno::Errno::ENODEV) => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// The background session data structure
#[derive(Debug)]
pub struct BackgroundSession {
    /// Thread guard of the background session
    pub guard: JoinHandle<io::Result<()>>,
    /// Object for creating Notifiers for client use
    sender: ChannelSender,
    /// Ensures the filesystem is unmounted when the session ends
    mount: Option<Mount>,
}

impl BackgroundSession {
    /// Unmount the filesystem and join the background thread.
    pub fn umount_and_join(mut self) -> io::Result<()> {
        if let Some(mount) = self.mount.take() {
            mount.umount()?;
        }
        self.join()
    }

    /// Returns an object that can be used to send notifications to the kernel
    pub fn notifier(&self) -> Notifier {
        Notifier::new(self.sender.clone())
    }

    /// Join the filesystem thread.
    pub fn join(self) -> io::Result<()> {
        self.guard
            .join()
            .map_err(|_panic: Box<dyn std::any::Any + Send>| {
                io::Error::new(
                    io::ErrorKind::Other,
                    "filesystem background thread panicked",
                )
            })?
    }
}
