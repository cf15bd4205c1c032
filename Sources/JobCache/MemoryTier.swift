/// A least-recently-used map bounded by the bytes of what it holds. Owned by one thread (the
/// event loop): no locks. Lookups, inserts and removals are O(1).
public final class MemoryTier<Key: Hashable, Value> {
    private final class Node {
        let key: Key
        var value: Value
        var cost: Int
        var newer: Node?
        /// Unowned: a weak reference would give every node a side-table allocation; the
        /// dictionaries own each node until `remove` has unlinked it.
        unowned(unsafe) var older: Node?
        init(key: Key, value: Value, cost: Int) {
            self.key = key
            self.value = value
            self.cost = cost
        }
    }

    public let budgetBytes: Int
    /// The nodes by their key's hash, each checked against its key on lookup. A bucket is 16
    /// bytes where one keyed by the key itself holds the key again (40 bytes for a `CacheKey`),
    /// and a table of 100k entries has 262,144 buckets: 8 MB less at 100k cached details.
    /// The hash is `hashValue`, seeded per process, so no client can choose keys that collide.
    private var byHash: [Int: Node] = [:]
    /// The few nodes whose key's hash another key already holds in `byHash`.
    private var collided: [Key: Node] = [:]
    /// `byHash` and `collided` own every node; `newer` (strong) and `older` (unowned) only order them.
    private var newest: Node?
    private unowned(unsafe) var oldest: Node?
    public private(set) var totalBytes = 0
    public private(set) var evictions = 0
    /// Told of each value evicted for the budget (not of one replaced by `set` or removed:
    /// the caller knows of those).
    public var onEvicted: ((Key, Value) -> Void)?

    public init(budgetBytes: Int) {
        self.budgetBytes = budgetBytes
    }

    public var count: Int { byHash.count + collided.count }

    /// The value for `key`, marked as just used.
    public func get(_ key: Key) -> Value? {
        guard let node = node(for: key) else { return nil }
        moveToNewest(node)
        return node.value
    }

    /// The value without changing its recency (for statistics and purges).
    public func peek(_ key: Key) -> Value? { node(for: key)?.value }

    private func node(for key: Key) -> Node? {
        if let node = byHash[key.hashValue], node.key == key { return node }
        return collided.isEmpty ? nil : collided[key]
    }

    /// Stores `value` costing `cost` bytes, then evicts least recently used entries over budget;
    /// returns the value it replaced. A value larger than the whole budget is not stored.
    @discardableResult
    public func set(_ key: Key, _ value: Value, cost: Int) -> Value? {
        let hash = key.hashValue
        let replaced = remove(key, hash: hash)
        guard cost <= budgetBytes else { return replaced }
        let node = Node(key: key, value: value, cost: cost)
        if byHash[hash] == nil { byHash[hash] = node } else { collided[key] = node }
        totalBytes += cost
        link(node)
        evictOverBudget()
        return replaced
    }

    @discardableResult
    public func remove(_ key: Key) -> Value? { remove(key, hash: key.hashValue) }

    private func remove(_ key: Key, hash: Int) -> Value? {
        let holder = byHash[hash]
        guard let node = holder?.key == key ? holder : collided[key] else { return nil }
        if holder === node {
            byHash[hash] = nil
            // A collided key with this hash takes the freed bucket, so lookups stay one probe.
            if !collided.isEmpty, let heir = collided.values.first(where: { $0.key.hashValue == hash }) {
                collided[heir.key] = nil
                byHash[hash] = heir
            }
        } else {
            collided[key] = nil
        }
        unlink(node)
        totalBytes -= node.cost
        return node.value
    }

    /// Adds `bytes` to the cost of `key`'s value when `isHeld` says the value is the one meant
    /// (a value made bigger after it was stored), then evicts over budget as `set` does.
    public func addCost(_ bytes: Int, to key: Key, ifHolding isHeld: (Value) -> Bool) {
        guard bytes > 0, let node = node(for: key), isHeld(node.value) else { return }
        node.cost += bytes
        totalBytes += bytes
        evictOverBudget()
    }

    private func evictOverBudget() {
        while totalBytes > budgetBytes, let victim = oldest {
            remove(victim.key)
            evictions += 1
            onEvicted?(victim.key, victim.value)
        }
    }

    /// Keys for which `predicate` holds (a scan of the keys: for purges and list sightings, not hits).
    public func keys(where predicate: (Key) -> Bool) -> [Key] {
        allKeys.filter(predicate)
    }

    /// Removes every entry whose key satisfies `predicate`; returns how many.
    @discardableResult
    public func removeAll(where predicate: (Key) -> Bool) -> Int {
        let doomed = allKeys.filter(predicate)
        for key in doomed { remove(key) }
        return doomed.count
    }

    private var allKeys: [Key] { byHash.values.map(\.key) + collided.values.map(\.key) }

    private func link(_ node: Node) {
        node.older = newest
        newest?.newer = node
        newest = node
        if oldest == nil { oldest = node }
    }

    private func unlink(_ node: Node) {
        if let older = node.older { older.newer = node.newer } else { oldest = node.newer }
        if let newer = node.newer { newer.older = node.older } else { newest = node.older }
        node.newer = nil
        node.older = nil
    }

    private func moveToNewest(_ node: Node) {
        guard newest !== node else { return }
        unlink(node)
        link(node)
    }
}
