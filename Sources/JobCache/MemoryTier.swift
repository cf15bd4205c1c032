/// A least-recently-used map bounded by the bytes of what it holds. Owned by one thread (the
/// event loop): no locks. Lookups, inserts and removals are O(1).
public final class MemoryTier<Key: Hashable, Value> {
    private final class Node {
        let key: Key
        var value: Value
        var cost: Int
        var newer: Node?
        /// Unowned: a weak reference would give every node a side-table allocation; the
        /// dictionary owns each node until `remove` has unlinked it.
        unowned(unsafe) var older: Node?
        init(key: Key, value: Value, cost: Int) {
            self.key = key
            self.value = value
            self.cost = cost
        }
    }

    public let budgetBytes: Int
    private var nodes: [Key: Node] = [:]
    /// The dictionary owns every node; `newer` (strong) and `older` (unowned) only order them.
    private var newest: Node?
    private unowned(unsafe) var oldest: Node?
    public private(set) var totalBytes = 0
    public private(set) var evictions = 0

    public init(budgetBytes: Int) {
        self.budgetBytes = budgetBytes
    }

    public var count: Int { nodes.count }

    /// The value for `key`, marked as just used.
    public func get(_ key: Key) -> Value? {
        guard let node = nodes[key] else { return nil }
        moveToNewest(node)
        return node.value
    }

    /// The value without changing its recency (for statistics and purges).
    public func peek(_ key: Key) -> Value? { nodes[key]?.value }

    /// Stores `value` costing `cost` bytes, then evicts least recently used entries over budget.
    /// A value larger than the whole budget is not stored.
    public func set(_ key: Key, _ value: Value, cost: Int) {
        remove(key)
        guard cost <= budgetBytes else { return }
        let node = Node(key: key, value: value, cost: cost)
        nodes[key] = node
        totalBytes += cost
        link(node)
        while totalBytes > budgetBytes, let victim = oldest {
            remove(victim.key)
            evictions += 1
        }
    }

    @discardableResult
    public func remove(_ key: Key) -> Value? {
        guard let node = nodes.removeValue(forKey: key) else { return nil }
        unlink(node)
        totalBytes -= node.cost
        return node.value
    }

    /// Keys for which `predicate` holds (a scan of the keys: for purges and list sightings, not hits).
    public func keys(where predicate: (Key) -> Bool) -> [Key] {
        nodes.keys.filter(predicate)
    }

    /// Removes every entry whose key satisfies `predicate`; returns how many.
    @discardableResult
    public func removeAll(where predicate: (Key) -> Bool) -> Int {
        let doomed = nodes.keys.filter(predicate)
        for key in doomed { remove(key) }
        return doomed.count
    }

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
