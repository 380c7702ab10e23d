// SPDX-License-Identifier: GPL-2.0
/*
 * ummunotify: the /dev/ummunotify misc device and its file operations.
 *
 * An fd is bound to the address space of the process that opened it.
 * Every ioctl, read, mmap and O_ASYNC change first checks that the caller
 * runs in that address space and fails with EIO otherwise (a fork child, a process that
 * received the fd over a Unix socket), before touching anything.
 * Locking rules: see umn_region.c.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/uaccess.h>
#include <linux/random.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/cred.h>

#include "umn.h"

/*
 * The limits (see umn_acct.c): unsigned ints read with READ_ONCE() by
 * REGISTER, written here with WRITE_ONCE().  Lowering one never takes
 * ranges away; REGISTER beyond any of them fails with ENOSPC.
 */
static int umn_limit_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;
	int ret;

	ret = kstrtouint(val, 0, &v);
	if (ret)
		return ret;
	WRITE_ONCE(*(unsigned int *)kp->arg, v);
	return 0;
}

static int umn_limit_get(char *buf, const struct kernel_param *kp)
{
	return scnprintf(buf, PAGE_SIZE, "%u\n",
			 READ_ONCE(*(unsigned int *)kp->arg));
}

static const struct kernel_param_ops umn_limit_ops = {
	.set = umn_limit_set,
	.get = umn_limit_get,
};

module_param_cb(max_regions, &umn_limit_ops, &umn_max_regions, 0644);
MODULE_PARM_DESC(max_regions, "Maximum number of ranges per fd");
module_param_cb(max_user_regions, &umn_limit_ops, &umn_max_user_regions,
		0644);
MODULE_PARM_DESC(max_user_regions,
		 "Maximum number of ranges per user, in all fds");
module_param_cb(max_mm_regions, &umn_limit_ops, &umn_max_mm_regions, 0644);
MODULE_PARM_DESC(max_mm_regions,
		 "Maximum number of ranges per address space, in all fds");

/* debugfs: ummunotify/live_regions, ranges alive in all fds (leak checks) */
static struct dentry *umn_debugfs;

static int umn_live_regions_show(struct seq_file *m, void *unused)
{
	seq_printf(m, "%ld\n", umn_live_regions());
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(umn_live_regions);

static bool umn_same_mm(const struct umn_file *uf)
{
	return current->mm == uf->mm;
}

static int umn_open(struct inode *inode, struct file *file)
{
	struct umn_file *uf;
	int ret;

	/* As in 2010: the device is opened read-only. */
	if (file->f_mode & FMODE_WRITE)
		return -EINVAL;
	if (!current->mm)
		return -EINVAL;

	uf = kzalloc(sizeof(*uf), GFP_KERNEL_ACCOUNT);
	if (!uf)
		return -ENOMEM;
	ret = umn_counter_init(uf);
	if (ret) {
		kfree(uf);
		return ret;
	}
	spin_lock_init(&uf->lock);
	mutex_init(&uf->mutex);
	uf->cookies = RB_ROOT;
	uf->ranges = RB_ROOT_CACHED;
	init_waitqueue_head(&uf->walk_wait);
	INIT_LIST_HEAD(&uf->queue);
	init_waitqueue_head(&uf->wait);
	get_random_bytes(&uf->reval_key, sizeof(uf->reval_key));
	uf->user_acct = umn_acct_get(UMN_ACCT_USER,
				     __kuid_val(current_euid()));
	uf->mm_acct = umn_acct_get(UMN_ACCT_MM, (unsigned long)current->mm);
	if (!uf->user_acct || !uf->mm_acct) {
		umn_acct_put(uf->user_acct);
		umn_acct_put(uf->mm_acct);
		umn_counter_free(uf);
		kfree(uf);
		return -ENOMEM;
	}
	uf->mm = current->mm;
	mmgrab(uf->mm);

	file->private_data = uf;
	return stream_open(inode, file);
}

/* Last reference: may run in any process, after the opener's mm exited. */
static int umn_release(struct inode *inode, struct file *file)
{
	struct umn_file *uf = file->private_data;

	umn_region_remove_all(uf);
	umn_ring_free(uf);
	umn_counter_free(uf);
	umn_acct_put(uf->user_acct);
	/* Before mmdrop(): the mm's address is the counter's key. */
	umn_acct_put(uf->mm_acct);
	mmdrop(uf->mm);
	mutex_destroy(&uf->mutex);
	kfree(uf);
	return 0;
}

static long umn_exchange_features(struct umn_file *uf, u32 __user *arg)
{
	u32 wanted;
	long ret = 0;

	if (get_user(wanted, arg))
		return -EFAULT;

	if (mutex_lock_interruptible(&uf->mutex))
		return -ERESTARTSYS;
	if (test_bit(UMN_USED, &uf->flags))
		ret = -EINVAL;
	else if (put_user(wanted & UMN_FEATURES_SUPPORTED, arg))
		ret = -EFAULT;
	else
		ret = umn_ring_set(uf, wanted & UMMUNOTIFY_FEATURE_RING);
	if (!ret)
		WRITE_ONCE(uf->features, wanted & UMN_FEATURES_SUPPORTED);
	mutex_unlock(&uf->mutex);
	return ret;
}

/*
 * RING: wait until every invalidation of the mm running now has ended, as
 * read() does before handing out a record (umn_ring.c).
 */
static long umn_settle(struct umn_file *uf)
{
	if (!(READ_ONCE(uf->features) & UMMUNOTIFY_FEATURE_RING))
		return -ENOTTY;
	if (mutex_lock_interruptible(&uf->mutex))
		return -ERESTARTSYS;
	if (uf->mni_live)
		umn_notifier_settle(uf);
	mutex_unlock(&uf->mutex);
	return 0;
}

static long umn_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct umn_file *uf = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct ummunotify_register_ioctl req;
	u64 cookie;

	if (!umn_same_mm(uf))
		return -EIO;

	switch (cmd) {
	case UMMUNOTIFY_EXCHANGE_FEATURES:
		return umn_exchange_features(uf, uarg);
	case UMMUNOTIFY_REGISTER_REGION:
		if (copy_from_user(&req, uarg, sizeof(req)))
			return -EFAULT;
		return umn_region_register(uf, &req);
	case UMMUNOTIFY_UNREGISTER_REGION:
		if (get_user(cookie, (u64 __user *)uarg))
			return -EFAULT;
		return umn_region_unregister(uf, cookie);
	case UMMUNOTIFY_ARM_REGION:
	case UMMUNOTIFY_CHECK_REGION:
		return umn_reval_ioctl(uf, cmd, uarg);
	case UMMUNOTIFY_SETTLE:
		return umn_settle(uf);
	case UMMUNOTIFY_OPEN_RING:
		return umn_ring_open(uf, file);
	default:
		return -ENOTTY;
	}
}

static ssize_t umn_read(struct file *file, char __user *buf, size_t count,
			loff_t *pos)
{
	struct umn_file *uf = file->private_data;
	ssize_t ret;

	if (!umn_same_mm(uf))
		return -EIO;
	if (count < sizeof(struct ummunotify_event))
		return -EINVAL;
	set_bit(UMN_USED, &uf->flags);

	for (;;) {
		ret = umn_region_read(uf, buf, count);
		if (ret)
			return ret;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		if (wait_event_interruptible(uf->wait, umn_region_readable(uf)))
			return -ERESTARTSYS;
	}
}

static __poll_t umn_poll(struct file *file, struct poll_table_struct *wait)
{
	struct umn_file *uf = file->private_data;

	if (!umn_same_mm(uf))
		return EPOLLERR;
	poll_wait(file, &uf->wait, wait);
	/* RING: records in the ring are readable too (by loads). */
	return umn_region_readable(uf) || umn_ring_pending(uf) ?
	       EPOLLIN | EPOLLRDNORM : 0;
}

/*
 * O_ASYNC (fcntl F_SETFL, ioctl FIOASYNC): same-mm only, like every other
 * entry point, so that a process that received the fd can neither get
 * SIGIO for the opener's invalidations nor turn off the opener's.  fd == -1
 * is __fput() removing the subscription of the last reference, which may
 * run in any process: always allowed.  (F_SETOWN has no driver hook: a
 * holder of the fd can redirect the SIGIO of an opener that enabled it.)
 */
static int umn_fasync(int fd, struct file *file, int on)
{
	struct umn_file *uf = file->private_data;

	if (fd != -1 && !umn_same_mm(uf))
		return -EIO;
	return fasync_helper(fd, file, on, &uf->fasync);
}

static int umn_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct umn_file *uf = file->private_data;
	int ret;

	if (!umn_same_mm(uf))
		return -EIO;
	ret = umn_counter_mmap(uf, vma);
	if (!ret)
		set_bit(UMN_USED, &uf->flags);
	return ret;
}

static const struct file_operations umn_fops = {
	.owner		= THIS_MODULE,
	.open		= umn_open,
	.release	= umn_release,
	.read		= umn_read,
	.poll		= umn_poll,
	.fasync		= umn_fasync,
	.unlocked_ioctl	= umn_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= umn_mmap,
};

static struct miscdevice umn_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "ummunotify",
	.fops	= &umn_fops,
	.mode	= 0666,
};

static int __init umn_init(void)
{
	int ret;

	ret = umn_region_cache_init();
	if (ret)
		return ret;
	ret = misc_register(&umn_misc);
	if (ret) {
		umn_region_cache_exit();
		return ret;
	}
	umn_debugfs = debugfs_create_dir("ummunotify", NULL);
	debugfs_create_file("live_regions", 0444, umn_debugfs, NULL,
			    &umn_live_regions_fops);
	return 0;
}

static void __exit umn_exit(void)
{
	debugfs_remove(umn_debugfs);
	misc_deregister(&umn_misc);
	umn_region_cache_exit();
}

module_init(umn_init);
module_exit(umn_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("User space notification of MMU invalidations");
