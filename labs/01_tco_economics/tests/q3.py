OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [{'code': '>>> from helpers.course.checks import lab01, say\n>>> say(lab01.q3(biggest_lever, biggest_swing))\n', 'hidden': False, 'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
