-- The demo marketplace: an application that existed before repstream. Its
-- tables are ordinary (DEFAULT replica identity, no triggers, nothing added
-- for repstream); repstream only reads their changes from the WAL.
--
-- Self-contained: `psql -v ON_ERROR_STOP=1 -f schema.sql` creates and seeds
-- it in one transaction. The seed is deterministic (setseed), so every fresh
-- demo starts from the same reviews.

BEGIN;
SET LOCAL search_path = public;

CREATE TABLE sellers (
    id         bigserial PRIMARY KEY,
    handle     text NOT NULL UNIQUE,
    name       text NOT NULL,
    city       text NOT NULL,
    joined_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id          bigserial PRIMARY KEY,
    seller_id   bigint NOT NULL REFERENCES sellers (id),
    title       text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_seller_id_idx ON products (seller_id);

CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    handle     text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Buyers review what they bought; moderation hides reviews, and reviews
-- with links wait as 'pending' until someone looks at them.
CREATE TABLE reviews (
    id         bigserial PRIMARY KEY,
    seller_id  bigint NOT NULL REFERENCES sellers (id),
    product_id bigint NOT NULL REFERENCES products (id),
    author     text NOT NULL,
    rating     smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    status     text NOT NULL DEFAULT 'published' CHECK (status IN ('published', 'hidden', 'pending')),
    body       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reviews_seller_id_idx ON reviews (seller_id);
CREATE INDEX reviews_product_id_idx ON reviews (product_id);

-- Users rate each other after a trade, 0 to 10.
CREATE TABLE ratings (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id),  -- the user rated
    rater_id   bigint NOT NULL REFERENCES users (id),
    score      integer NOT NULL CHECK (score BETWEEN 0 AND 10),
    comment    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (user_id <> rater_id)
);
CREATE INDEX ratings_user_id_idx ON ratings (user_id);

-- ---------------------------------------------------------------------------
-- Seed. quality is only for seeding: how good each seller's reviews tend to be.
CREATE TEMP TABLE demo_seed (handle text, name text, city text, quality numeric, goods text[]);
INSERT INTO demo_seed VALUES
    ('harbor-lane-ceramics',   'Harbor Lane Ceramics',           'Portland',    4.6, '{"Speckled Mug","Stoneware Bowl","Tide Pool Vase","Salt Glaze Plate"}'),
    ('pixel-and-pine',         'Pixel & Pine',                   'Austin',      4.3, '{"Walnut Phone Stand","Pine Desk Organizer","Maple Keyboard Tray","Cable Comb"}'),
    ('moonlight-candle-co',    'Moonlight Candle Co.',           'Savannah',    4.4, '{"Lavender Soy Candle","Cedar Smoke Candle","Beeswax Tapers","Midnight Fig Candle"}'),
    ('the-rusty-anchor',       'The Rusty Anchor',               'Gloucester',  3.6, '{"Brass Ship Bell","Rope Doorstop","Porthole Mirror","Anchor Bookends"}'),
    ('velvet-fox-vintage',     'Velvet Fox Vintage',             'Brooklyn',    4.2, '{"Corduroy Jacket","Silk Scarf","Leather Satchel","Wool Fedora"}'),
    ('copper-kettle-kitchen',  'Copper Kettle Kitchenware',      'Milwaukee',   4.0, '{"Copper Kettle","Cast Iron Skillet","Bamboo Spoon Set","Enamel Dutch Oven"}'),
    ('north-star-knits',       'North Star Knits',               'Duluth',      4.5, '{"Fisherman Sweater","Cable Beanie","Alpaca Mittens","Chunky Scarf"}'),
    ('bramble-and-bee',        'Bramble & Bee',                  'Asheville',   4.7, '{"Wildflower Honey","Beeswax Wraps","Honey Dipper","Comb Honey Jar"}'),
    ('gadget-grotto',          'Gadget Grotto',                  'San Jose',    3.2, '{"USB-C Hub","Wireless Earbuds","Phone Gimbal","Smart Plug"}'),
    ('tidewater-tackle',       'Tidewater Tackle',               'Norfolk',     3.9, '{"Surf Rod","Spinning Reel","Tackle Box","Braided Line"}'),
    ('paper-crane-press',      'Paper Crane Press',              'Kyoto',       4.4, '{"Letterpress Cards","Washi Notebook","Origami Kit","Linen Journal"}'),
    ('salt-and-cedar',         'Salt & Cedar',                   'Seattle',     4.1, '{"Cedar Soap","Sea Salt Scrub","Beard Oil","Shaving Brush"}'),
    ('iron-owl-outfitters',    'Iron Owl Outfitters',            'Boise',       3.8, '{"Canvas Backpack","Camp Lantern","Titanium Spork","Trail Hammock"}'),
    ('lucky-cat-imports',      'Lucky Cat Imports',              'Oakland',     3.0, '{"Waving Cat Figurine","Paper Lanterns","Bento Box","Tea Set"}'),
    ('wildflower-apothecary',  'Wildflower Apothecary',          'Santa Fe',    4.6, '{"Calendula Salve","Rose Hip Oil","Chamomile Tea","Lavender Balm"}'),
    ('blue-heron-books',       'Blue Heron Books',               'Burlington',  4.3, '{"Signed First Edition","Poetry Chapbook","Field Guide to Birds","Map Atlas"}'),
    ('quantum-quokka-toys',    'Quantum Quokka Toys',            'Perth',       3.7, '{"Wooden Robot","Marble Run","Stacking Rainbow","Puzzle Cube"}'),
    ('sunday-morning-coffee',  'Sunday Morning Coffee Roasters', 'Denver',      4.5, '{"Ethiopia Yirgacheffe","House Espresso","Decaf Colombia","Pour-over Kit"}'),
    ('cobblestone-cobbler',    'Cobblestone Cobbler',            'Boston',      3.9, '{"Leather Boots","Resoling Kit","Shoe Trees","Suede Brush"}'),
    ('neon-llama-electronics', 'Neon Llama Electronics',         'Las Vegas',   2.9, '{"LED Strip","Bluetooth Speaker","Retro Console","Power Bank"}'),
    ('maple-and-moss',         'Maple & Moss',                   'Montpelier',  4.2, '{"Maple Syrup","Moss Terrarium","Birch Coasters","Pinecone Wreath"}'),
    ('stormcloud-umbrellas',   'Stormcloud Umbrellas',           'Glasgow',     3.4, '{"Golf Umbrella","Pocket Umbrella","Clear Dome Umbrella","Rain Poncho"}'),
    ('golden-hour-optics',     'Golden Hour Optics',             'Phoenix',     4.0, '{"50mm Prime Lens","Camera Strap","Lens Hood","ND Filter"}'),
    ('hidden-fig-pantry',      'Hidden Fig Pantry',              'Charleston',  4.4, '{"Fig Jam","Smoked Paprika","Olive Oil","Pickled Okra"}'),
    ('tin-robot-repairs',      'Tin Robot Repairs',              'Detroit',     3.3, '{"Refurbished Laptop","Screen Protector","Battery Pack","Repair Toolkit"}'),
    ('sea-glass-jewelry',      'Sea Glass Jewelry',              'Mendocino',   4.6, '{"Sea Glass Pendant","Driftwood Earrings","Shell Bracelet","Tide Ring"}'),
    ('thunder-road-motors',    'Thunder Road Motor Parts',       'Tulsa',       3.5, '{"Chrome Mirror","Brake Pads","Spark Plug Set","Seat Cover"}'),
    ('cozy-yeti-blankets',     'Cozy Yeti Blankets',             'Anchorage',   4.3, '{"Sherpa Throw","Weighted Blanket","Flannel Sheets","Faux Fur Pillow"}'),
    ('prairie-wind-pottery',   'Prairie Wind Pottery',           'Omaha',       4.1, '{"Prairie Pitcher","Wheat Plate","Ash Glaze Cup","Bud Vase"}'),
    ('bargain-barn',           'Bargain Barn',                   'Fresno',      2.7, '{"Mystery Box","Phone Case","Tote Bag","Keychain 10-pack"}'),
    ('oak-and-ember-woodworks','Oak & Ember Woodworks',          'Nashville',   4.5, '{"Cutting Board","Walnut Serving Tray","Oak Shelf","Ember Coaster Set"}'),
    ('starlight-stationery',   'Starlight Stationery',           'Minneapolis', 4.0, '{"Fountain Pen","Constellation Notebook","Wax Seal Kit","Ink Bottle"}'),
    ('midnight-noodle-co',     'Midnight Noodle Co.',            'Honolulu',    3.8, '{"Ramen Kit","Chili Crisp","Udon Bowl","Chopstick Set"}'),
    ('silver-spoon-antiques',  'Silver Spoon Antiques',          'Richmond',    3.6, '{"Silver Tea Spoon","Art Deco Clock","Brass Candlestick","Victorian Mirror"}'),
    ('happy-hound-pet-supply', 'Happy Hound Pet Supply',         'San Diego',   4.2, '{"Rope Tug Toy","Orthopedic Dog Bed","Salmon Treats","Reflective Leash"}'),
    ('alpine-thread-co',       'Alpine Thread Co.',              'Bozeman',     4.1, '{"Merino Base Layer","Wool Socks","Fleece Vest","Trail Gaiters"}');

SELECT setseed(0.4242);

INSERT INTO sellers (handle, name, city, joined_at)
SELECT handle, name, city, now() - interval '1 day' * (200 + (row_number() OVER ()) * 17)
FROM demo_seed;

INSERT INTO products (seller_id, title, price_cents, created_at)
SELECT s.id, g.title, 500 + floor(random() * 9500)::int, s.joined_at + interval '3 days' * g.n
FROM sellers s
JOIN demo_seed d USING (handle)
CROSS JOIN LATERAL unnest(d.goods) WITH ORDINALITY AS g (title, n)
ORDER BY s.id, g.n;

INSERT INTO users (handle, created_at)
SELECT (ARRAY['quiet','brave','sunny','lucky','clever','gentle','rapid','mellow','witty','bold',
              'curious','jolly','nimble','proud','sleepy','tidy'])[1 + (g % 16)]
       || '_' ||
       (ARRAY['otter','heron','badger','lynx','marmot','puffin','gecko','walrus','falcon','koala',
              'bison','ferret','newt','osprey','panda','quail','raven','tapir','wombat','yak'])[1 + ((g / 16) % 20)]
       || '_' || g,
       now() - interval '1 hour' * g
FROM generate_series(1, 400) AS g;

-- Reviews: each product gets 4 to 14, around its seller's quality.
INSERT INTO reviews (seller_id, product_id, author, rating, status, body, created_at, updated_at)
SELECT r.seller_id, r.product_id, u.handle, r.rating,
       CASE WHEN r.u < 0.05 THEN 'pending' WHEN r.u < 0.11 THEN 'hidden' ELSE 'published' END,
       (ARRAY[['Never arrived.', 'Broke the first week.', 'Nothing like the photos.'],
              ['Slow to ship and flimsy.', 'Disappointing for the price.', 'Seller was hard to reach.'],
              ['It is fine.', 'Does the job.', 'Average, nothing special.'],
              ['Good value.', 'Nice, would buy again.', 'Well made, shipped quickly.'],
              ['Absolutely love it!', 'Perfect, and beautifully packed.', 'Best purchase this year.']])[r.rating][1 + floor(random() * 3)::int],
       r.at, r.at
FROM (
    SELECT p.seller_id, p.id AS product_id,
           1 + floor(random() * 400)::int AS author_id,
           least(5, greatest(1, round(d.quality + 1.3 * (random() + random() - 1))))::smallint AS rating,
           random() AS u,
           now() - interval '1 minute' * floor(random() * 60 * 24 * 180) AS at
    FROM products p
    JOIN sellers s ON s.id = p.seller_id
    JOIN demo_seed d USING (handle)
    CROSS JOIN LATERAL generate_series(1, 4 + (p.id * 7) % 11) AS g
    ORDER BY p.id, g
) r
JOIN users u ON u.id = r.author_id
ORDER BY r.at;

-- Ratings between users, around each rated user's own standing.
INSERT INTO ratings (user_id, rater_id, score, created_at, updated_at)
SELECT x.user_id, x.rater_id,
       least(10, greatest(0, round(5 + (x.user_id * 29 % 9) / 2.0 + 2 * (random() + random() - 1))))::int,
       x.at, x.at
FROM (
    SELECT 1 + floor(random() * 400)::int AS user_id,
           1 + floor(random() * 399)::int AS k,
           now() - interval '1 minute' * floor(random() * 60 * 24 * 90) AS at
    FROM generate_series(1, 2500) AS g
) y
CROSS JOIN LATERAL (SELECT y.user_id, 1 + (y.user_id - 1 + y.k) % 400 AS rater_id, y.at) x
ORDER BY x.at;

DROP TABLE demo_seed;
COMMIT;
